"""Serving the API: uvicorn on a socket bound first, so that a taken port
is one clear line and exit 1, not a log record from inside the server."""

from __future__ import annotations

import logging
import socket

from sqlalchemy import Engine

from divert.errors import PortalUnavailable

log = logging.getLogger("divert.api")


def serve(engine: Engine, host: str, port: int, portal: str) -> int:
    import uvicorn

    from divert.api.app import create_app

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise PortalUnavailable(f"cannot listen on {host}:{port}: {error.strerror}") from None
    listener.listen(128)
    logging.basicConfig(format="%(asctime)s divert %(levelname)s %(message)s", level=logging.INFO)
    log.info(
        "portal API on http://%s:%d/api/v1, self-care page on /self-care (portal %s)",
        host,
        port,
        portal,
    )
    config = uvicorn.Config(
        create_app(engine),
        log_level="warning",
        access_log=False,  # requests are the portal's business; tokens are never logged
        server_header=False,
    )
    uvicorn.Server(config).run(sockets=[listener])
    return 0
