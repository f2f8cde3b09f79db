"""What the tutoring logic raises when a request cannot be answered; the API maps each to one
status in the one error shape (``deployments/errors.py``), so the logic never speaks HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from deployments.lifecycle.rollout import UnknownVersionError

logger = logging.getLogger("ray.serve")
T = TypeVar("T")


class NotFoundError(LookupError):
    """An unknown learner or turn (404)."""


class ConflictError(RuntimeError):
    """The request contradicts what is stored, e.g. another learner's turn id (409)."""


class InvalidRequestError(ValueError):
    """Valid JSON the tutor still cannot serve, e.g. a chat with no user text (422)."""


class UnavailableError(RuntimeError):
    """A dependency the endpoint cannot answer without failed (503, with Retry-After)."""

    code: str | None = None  # the error shape's code; None: "unavailable"

    def __init__(self, dependency: str, cause: BaseException) -> None:
        super().__init__(f"the {dependency} is unavailable ({type(cause).__name__})")
        self.dependency = dependency


class StoreUnavailableError(UnavailableError):
    """The store cannot answer now and nothing can stand in for it (503 store_unavailable):
    nothing was recorded, and the same request is safe to retry."""

    code = "store_unavailable"

    def __init__(self, message: str) -> None:
        RuntimeError.__init__(self, message)
        self.dependency = "store"


async def required(dependency: str, call: Awaitable[T], *, timeout_s: float) -> T:
    """Await a deployment call whose failure leaves nothing to answer with."""
    try:
        async with asyncio.timeout(timeout_s):  # not wait_for: see admission._enter
            return await call
    except UnknownVersionError as exc:
        # A well-formed request for a version not in service now (it may be loaded later,
        # as a canary or shadow): a conflict with the app's state, not a malformed body.
        raise ConflictError(str(getattr(exc, "cause", exc))) from exc
    except Exception as exc:
        logger.warning("%s failed: %r", dependency, exc)
        raise UnavailableError(dependency, exc) from exc
