"""The portal API and the self-care page: one ASGI application.

FastAPI (on Starlette, served by uvicorn) because it is the best kept of
Python's HTTP frameworks that derive an OpenAPI schema from the handlers'
own type hints: the schema at ``/api/openapi.json`` cannot drift from the
code.  Every handler is a thin adapter over `divert.portal`, the same
functions the `divert` command calls, so the API validates exactly as the
CLI does and answers with the CLI's one-line message:

- bad input, a refused change (a loop, a policy): 422 ``{"error": ...}``;
- a body or parameter of the wrong shape: 422, one line naming the field;
- a row that does not exist, or that belongs to a tenant the caller cannot
  see: 404;
- valid credentials that do not reach the resource: 403;
- no or wrong credentials: 401; the portal unreachable: 503.

Each request is one portal transaction: it commits whole or not at all,
and the database's own journal triggers tell the sync worker, so a change
made here routes the next call like one made with the CLI.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi import Path as PathParameter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from divert.api.auth import Caller, Forbidden, Unauthorized, authenticate
from divert.errors import DivertError, NotFound, PortalUnavailable

PAGE = Path(__file__).with_name("page")
log = logging.getLogger("divert.api")
_credentials = APIKeyHeader(
    name="Authorization",
    auto_error=False,
    description="'Bearer <token>' (divert token add), or 'Basic' with a subscriber's "
    "username@domain and SIP password",
)


def first_line(text: object) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else "unknown error"


@contextmanager
def transaction(request: Request) -> Iterator[Connection]:
    """One portal transaction: commits whole, or rolls back on any error."""
    engine: Engine = request.app.state.engine
    with engine.begin() as connection:
        yield connection


def caller(request: Request, authorization: Annotated[str | None, Depends(_credentials)]) -> Caller:
    engine: Engine = request.app.state.engine
    with engine.connect() as connection:
        return authenticate(connection, authorization)


Authenticated = Annotated[Caller, Depends(caller)]
RowId = Annotated[int, PathParameter(ge=1, le=2**63 - 1, description="as listed")]
"""A portal row's id: a 64-bit key (a larger one is a 422, not a database error)."""


def create_app(engine: Engine) -> FastAPI:
    from divert.api import directory, forwards

    app = FastAPI(
        title="divert portal API",
        summary="Tenants, trunks, subscribers, numbers, forwards, schedules, the "
        "destination policy, and what a call would do.",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url=None,  # Swagger UI would load its scripts from a CDN
        redoc_url=None,
    )
    app.state.engine = engine
    app.include_router(forwards.router, prefix="/api/v1")
    app.include_router(directory.router, prefix="/api/v1")
    _errors(app)
    app.mount("/static", StaticFiles(directory=PAGE), name="static")

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/self-care")

    @app.get("/self-care", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE / "index.html", headers={"Cache-Control": "no-store"})

    return app


Endpoint = Callable[[Request], Awaitable[Response]]


def _errors(app: FastAPI) -> None:
    def error(status: int, message: str, **headers: str) -> JSONResponse:
        return JSONResponse({"error": first_line(message)}, status_code=status, headers=headers)

    @app.exception_handler(Unauthorized)
    def unauthorized(_: Request, problem: Unauthorized) -> JSONResponse:
        return error(401, str(problem), **{"WWW-Authenticate": 'Bearer realm="divert"'})

    @app.exception_handler(Forbidden)
    def forbidden(_: Request, problem: Forbidden) -> JSONResponse:
        return error(403, str(problem))

    @app.exception_handler(NotFound)
    def not_found(_: Request, problem: NotFound) -> JSONResponse:
        return error(404, str(problem))

    @app.exception_handler(PortalUnavailable)
    def unavailable(_: Request, problem: PortalUnavailable) -> JSONResponse:
        return error(503, str(problem))

    @app.exception_handler(DivertError)
    def refused(_: Request, problem: DivertError) -> JSONResponse:
        return error(422, str(problem))

    @app.exception_handler(RequestValidationError)
    def malformed(_: Request, problem: RequestValidationError) -> JSONResponse:
        first = problem.errors()[0] if problem.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return error(422, f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(HTTPException)
    def http_error(_: Request, problem: HTTPException) -> JSONResponse:
        # Starlette's own: no such route (404), a method it does not take
        # (405), a body that is not JSON (400)
        return error(problem.status_code, str(problem.detail))

    @app.middleware("http")
    async def internal(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """The unforeseen: one log line and a one-line 500, never a traceback."""
        try:
            return await call_next(request)
        except Exception as problem:
            log.error("internal error: %s: %s", type(problem).__name__, first_line(problem))
            return error(500, f"internal error: {type(problem).__name__}")

    @app.exception_handler(IntegrityError)
    def conflict(_: Request, problem: IntegrityError) -> JSONResponse:
        return error(409, f"refused by the portal: {first_line(problem.orig)}")

    @app.exception_handler(OperationalError)
    def portal_down(_: Request, problem: OperationalError) -> JSONResponse:
        return error(503, f"cannot use the portal: {first_line(problem.orig)}")

    @app.exception_handler(DBAPIError)
    def portal_failed(_: Request, problem: DBAPIError) -> JSONResponse:
        return error(503, f"the portal failed: {first_line(problem.orig)}")
