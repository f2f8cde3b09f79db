"""One error shape for the whole API: ``{"error": {"code", "message", "request_id", "fields"}}``."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.schemas import ErrorDetail, ErrorResponse
from deployments.tutoring.admission import Overloaded, RequestTimedOut
from deployments.tutoring.exceptions import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
)
from store import StoreError

logger = logging.getLogger("ray.serve")


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}
# 401/403/429 come from API keys and their limits, 413 from the body limit
# (deployments/security/), answered before the routes.
ERROR_RESPONSES = {
    status: {"model": ErrorResponse}
    for status in (400, 401, 403, 404, 408, 409, 413, 422, 429, 503)
}


def error_response(
    status: int,
    message: str,
    *,
    request_id: str,
    fields: list[dict] | None = None,
    headers: dict[str, str] | None = None,
    code: str | None = None,
) -> JSONResponse:
    """An error in the one shape."""
    detail = ErrorDetail(
        code=code or _CODES.get(status, "error"),
        message=message,
        request_id=request_id,
        fields=fields or [],
    )
    body = ErrorResponse(error=detail)
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


def _describe(error: dict) -> dict:
    # Drop the echoed input: it can be a 4000-character message or a secret a client pasted.
    loc = list(error.get("loc", ()))
    if loc[:1] in (["body"], ["path"], ["query"]) and len(loc) > 1:
        loc = loc[1:]  # "body.message" reads worse than "message"
    location = ".".join(str(part) for part in loc) or "body"
    return {"field": location, "problem": error.get("msg", "invalid"), "type": error.get("type")}


def install_error_handlers(app: FastAPI, *, request_id: Callable[[], str]) -> None:
    """Answer every error in the one shape; ``request_id`` reads the current request's id."""

    def respond(
        status: int,
        message: str,
        fields: list[dict] | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> JSONResponse:
        return error_response(
            status, message, request_id=request_id(), fields=fields, headers=headers, code=code
        )

    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [_describe(e) for e in exc.errors()]
        if any(f["type"] == "json_invalid" for f in fields):
            message = "the request body is not valid JSON"
        else:
            message = "; ".join(f"{f['field']}: {f['problem']}" for f in fields)
        return respond(422, message, fields)

    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Keep the exception's headers: a 405 must say which methods are allowed (`Allow`).
        return respond(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    async def unavailable(_: Request, exc: UnavailableError | StoreError) -> JSONResponse:
        code = getattr(exc, "code", None)
        if isinstance(exc, StoreError):
            logger.warning("store unavailable: %s", exc)
            message, code = f"the store is unavailable: {exc}", "store_unavailable"
        else:
            message = str(exc)  # `required` logged the cause
        return respond(503, message, headers={"Retry-After": "5"}, code=code)

    async def overloaded(_: Request, exc: Overloaded) -> JSONResponse:
        # Shed, not failed: "overloaded" tells a client to back off, where "unavailable" is a
        # dependency down.
        headers = {"Retry-After": exc.retry_after_header}
        return respond(503, str(exc), headers=headers, code="overloaded")

    async def timed_out(_: Request, exc: RequestTimedOut) -> JSONResponse:
        return respond(408, str(exc))

    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return respond(500, f"internal error ({type(exc).__name__}); it has been logged")

    for status, error in ((404, NotFoundError), (409, ConflictError), (422, InvalidRequestError)):

        async def refused(_: Request, exc: Exception, status: int = status) -> JSONResponse:
            return respond(status, str(exc))

        app.add_exception_handler(error, refused)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(UnavailableError, unavailable)
    app.add_exception_handler(StoreError, unavailable)
    app.add_exception_handler(Overloaded, overloaded)
    app.add_exception_handler(RequestTimedOut, timed_out)
    app.add_exception_handler(Exception, unexpected_error)
