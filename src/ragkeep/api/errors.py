"""Errors as R2R's clients read them: ``{"detail": {"message": ..., "error_type": ...}}``.

R2R's SDK raises ``R2RException(status_code, message)`` from ``detail.message`` (or a string
``detail``), so every error here carries one sentence that says what was wrong.

The one mapping from what went wrong to HTTP is :data:`STATUS`: domain code raises the classes of
``ragkeep.errors`` and knows no status codes; :func:`install` registers every handler. A route's
own complaint about the request it was sent is an :class:`ApiError`, one more entry of the table
whose status the route chooses (its ``error_type`` is "ApiError" on the wire, which clients see).
Framework errors keep their handlers here too: Starlette's HTTPException (unknown routes, the
form guard), request validation (422), database unavailability (503) and unexpected errors (500).
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragkeep.errors import (
    BadRequest,
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    LimitExceeded,
    NotFound,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
    Unavailable,
    UploadTooLarge,
)
from ragkeep.search.filters import FilterError
from ragkeep.search.settings import InvalidSearch

log = logging.getLogger(__name__)


class ApiError(DomainError):
    """A route's refusal of the request it was sent, with the status the route chose."""

    def __init__(self, status_code: int, message: str, **extra: object) -> None:
        super().__init__(message, **extra)
        self.status_code = status_code


#: Domain error class -> (HTTP status, ``error_type`` on the wire); an error takes the entry of the
#: first class of its MRO found here (``DuplicateDocument`` is a Conflict: 409). A status of None
#: is the error's own (:class:`ApiError`). Every limit answers "LimitExceeded" with its figures;
#: an invalid filter adds its ``path`` (the error's ``extra``).
STATUS: dict[type[DomainError], tuple[int | None, str]] = {
    ApiError: (None, "ApiError"),
    FilterError: (422, "ApiError"),  # search's own refusals keep the wire type routes gave them
    InvalidSearch: (422, "ApiError"),
    BadRequest: (400, "BadRequest"),
    Unauthorized: (401, "Unauthorized"),
    Forbidden: (403, "Forbidden"),
    NotFound: (404, "NotFound"),
    Conflict: (409, "Conflict"),
    InvalidInput: (422, "InvalidInput"),
    Unavailable: (503, "Unavailable"),
    QuotaExceeded: (403, "LimitExceeded"),
    UploadTooLarge: (413, "LimitExceeded"),
    RateLimited: (429, "LimitExceeded"),
    LimitExceeded: (403, "LimitExceeded"),
    DomainError: (400, "BadRequest"),
}

#: What a 401 tells the client to send (RFC 9110 requires the header on every 401).
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}


def describe(exc: DomainError) -> tuple[int, str]:
    """The status and ``error_type`` :data:`STATUS` gives ``exc``."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            status, error_type = STATUS[cls]
            if status is None:
                status = exc.status_code if isinstance(exc, ApiError) else 400
            return status, error_type
    raise TypeError(f"{type(exc).__name__} is not a DomainError")  # STATUS has DomainError itself


def status_of(exc: DomainError) -> int:
    return describe(exc)[0]


def _body(
    status: int,
    message: str,
    error_type: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """R2R's error shape; every 401 says what to send (``WWW-Authenticate``)."""
    if status == 401:
        headers = {**UNAUTHORIZED_HEADERS, **(headers or {})}
    return JSONResponse(
        status_code=status,
        content={"detail": {"message": message, "error_type": error_type, **(extra or {})}},
        headers=headers,
    )


def domain_error_response(exc: DomainError) -> JSONResponse:
    """``exc`` in R2R's shape with its extra fields; ``Retry-After`` for a rate limit and a 503."""
    status, error_type = describe(exc)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is None and status == 503:
        retry_after = RETRY_AFTER_SECONDS
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return _body(status, exc.message, error_type, exc.extra, headers)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form")]
    return ".".join(parts) or "request"


def install(app: FastAPI) -> None:
    """Register every error handler (the 503 of :func:`install_database_unavailable` aside)."""

    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return domain_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        resp = _body(exc.status_code, message, "HTTPException")
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        return resp

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _location(e.get("loc", ())), "message": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return _body(422, message or "invalid request", "ValidationError", {"errors": errors[:50]})

    _document_error_shape(app)
    app.add_middleware(UnexpectedErrors)  # first added: innermost, so the activity metrics see the 500


#: What every error response holds (``_body``), as JSON Schema.
ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "type": "object",
            "required": ["message", "error_type"],
            "properties": {"message": {"type": "string"}, "error_type": {"type": "string"}},
        }
    },
}


def _document_error_shape(app: FastAPI) -> None:
    """The schema FastAPI documents for its 422s (``HTTPValidationError``: ``detail`` a list) is
    not what ``_validation`` sends; clients and schema checkers (schemathesis) read the real one."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            schemas = spec.get("components", {}).get("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = ERROR_SCHEMA
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class UnexpectedErrors:
    """Answers an unhandled exception with a 500 and keeps the connection open.

    Not ``@app.exception_handler(Exception)``: Starlette runs that handler in its outermost
    middleware and then re-raises, so uvicorn logs the error a second time and closes the
    keep-alive connection, and the client's next request on it is reset. The traceback is
    formatted here as plain text (a Rich traceback took ~2 s of the event loop per error).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        except Exception as exc:
            trace = "".join(traceback.format_exception(exc))
            log.error("unhandled error on %s %s\n%s", scope.get("method"), scope.get("path"), trace)
            if started:  # part of the response is out: uvicorn closes this connection
                return
            response = _body(500, "internal server error; the server log has the details", "InternalError")
            await response(scope, receive, send)


#: Seconds a client is asked to wait after a 503: the pool retries the database twice a second
#: and the embedded server's supervisor restarts it within about a second.
RETRY_AFTER_SECONDS = 1
_UNAVAILABLE_LOG_EVERY = 5.0


def install_database_unavailable(app: FastAPI) -> None:
    """Database trouble is a 503 with Retry-After, in one place: every ``psycopg.OperationalError``
    (server down or restarting, connection lost, pool exhausted (PoolTimeout), statement_timeout,
    deadlock, too many connections). Logged once per few seconds, without a traceback: during an
    outage every request fails the same way."""
    last = [0.0, 0]  # when it was last logged, how many since

    @app.exception_handler(psycopg.OperationalError)
    async def _unavailable(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        now = time.monotonic()
        last[1] += 1
        if now - last[0] >= _UNAVAILABLE_LOG_EVERY:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("503 on %s %s: database unavailable (%s: %s); %d such answers since the last note",
                        request.method, request.url.path, type(exc).__name__, reason, last[1])
            last[0], last[1] = now, 0
        resp = _body(503, "the database is unavailable right now (restarting or overloaded); retry shortly",
                     "ServiceUnavailable")
        resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return resp
