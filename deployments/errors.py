"""One error shape for the whole API: ``{"error": {"code", "message", "request_id", "fields"}}``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.request_context import current_request_id
from deployments.schemas import ErrorDetail, ErrorResponse
from store import StoreError

logger = logging.getLogger("ray.serve")
T = TypeVar("T")


class UnavailableError(RuntimeError):
    """A dependency the endpoint cannot answer without failed: a 503, not a 500."""

    def __init__(self, dependency: str, cause: BaseException) -> None:
        super().__init__(f"the {dependency} is unavailable ({type(cause).__name__})")
        self.dependency = dependency


async def required(dependency: str, call: Awaitable[T], *, timeout_s: float) -> T:
    """Await a deployment call whose failure leaves nothing to answer with."""
    try:
        return await asyncio.wait_for(call, timeout=timeout_s)
    except Exception as exc:
        logger.warning("%s failed: %r", dependency, exc)
        raise UnavailableError(dependency, exc) from exc


_CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
}
ERROR_RESPONSES = {status: {"model": ErrorResponse} for status in (400, 404, 409, 422, 503)}


def error_response(
    status: int,
    message: str,
    fields: list[dict] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(
        error=ErrorDetail(
            code=_CODES.get(status, "error"),
            message=message,
            request_id=current_request_id(),
            fields=fields or [],
        )
    )
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


def _describe(error: dict) -> dict:
    # Drop the echoed input: it can be a 4000-character message or a secret a client pasted.
    loc = list(error.get("loc", ()))
    if loc[:1] in (["body"], ["path"], ["query"]) and len(loc) > 1:
        loc = loc[1:]  # "body.message" reads worse than "message"
    location = ".".join(str(part) for part in loc) or "body"
    return {"field": location, "problem": error.get("msg", "invalid"), "type": error.get("type")}


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    fields = [_describe(e) for e in exc.errors()]
    if any(f["type"] == "json_invalid" for f in fields):
        message = "the request body is not valid JSON"
    else:
        message = "; ".join(f"{f['field']}: {f['problem']}" for f in fields)
    return error_response(422, message, fields)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Keep the exception's headers: a 405 must say which methods are allowed (`Allow`).
    return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _unavailable(_: Request, exc: UnavailableError | StoreError) -> JSONResponse:
    message = str(exc) if isinstance(exc, UnavailableError) else f"the store is unavailable: {exc}"
    return error_response(503, message, headers={"Retry-After": "5"})


async def _unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error")
    return error_response(500, f"internal error ({type(exc).__name__}); it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(UnavailableError, _unavailable)
    app.add_exception_handler(StoreError, _unavailable)
    app.add_exception_handler(Exception, _unexpected_error)
