"""The two ways a `tutor` command fails, each with its exit code."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import typer

T = TypeVar("T")


class RefusedError(ValueError):
    """The request is wrong (bad name, unknown version, canary of the champion...). Raised
    before anything changes: the file, the application and the history are as they were."""

    exit_code = 2


class ApplyError(RuntimeError):
    """The request was fine but applying it failed (dashboard unreachable, Serve refused or
    timed out, history not written). The message says what state things were left in."""

    exit_code = 1


class DeployFailedError(ApplyError):
    """Serve reported DEPLOY_FAILED for the change: it must be undone."""


class ApplyTimeoutError(ApplyError):
    """The app did not run the change in time; it may still be applying it."""


def run_command(work: Callable[[], T]) -> T:
    """Errors become one line on stderr and the exit code of their kind."""
    try:
        return work()
    except (RefusedError, ApplyError) as exc:
        typer.echo(f"tutor: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
