"""Phone feature codes: subscribers change their own forwards by dialling.

Kamailio relays a `*` call from an authenticated subscriber to the feature
server (`server.py`), a separate process started by `divert run`, so that
number parsing and portal writes never happen in Kamailio's workers.
"""
