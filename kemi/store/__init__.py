"""The node-local forward-table store: its format (`format`), read by Kamailio
(`reader`), written only by the sync worker (`divert.sync.store_writer`)."""
