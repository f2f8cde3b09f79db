"""`tutor`: argument parsing only; the work is in ``operations`` and ``reports``.

Exit codes: 0 done; 2 refused (bad name, unknown version, a change that makes no sense: nothing
was changed); 1 the change could not be applied (the message says what state it left).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from deployments.cli import keys, kuberay, plan, render, reports
from deployments.cli.errors import run_command
from deployments.cli.operations import ChangeResult, Workspace, apply_change
from deployments.cli.serve_client import default_address
from deployments.lifecycle.rollout import utc_now

app = typer.Typer(
    name="tutor",
    help="Operate the tutor's Serve application.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(
    help="Model versions in the running graph: list, promote, canary, shadow, rollback, status.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")
app.add_typer(keys.app, name="keys")


Name = Annotated[str, typer.Argument(help="emotion, difficulty or personalization.")]
Version = Annotated[str, typer.Argument(help="A registered version, e.g. v3.")]
ConfigOpt = Annotated[
    Path, typer.Option("--config", help="The Serve config file, kept as the source of truth.")
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address", help="Ray dashboard (default $RAY_DASHBOARD_ADDRESS or http://127.0.0.1:8265)."
    ),
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why: recorded in the history.")]
NoWaitOpt = Annotated[
    bool, typer.Option("--no-wait", help="Send the change and return without waiting for it.")
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for the app to run the change.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

DEFAULT_CONFIG = Path("serve_config.yaml")


def _console() -> Console:
    # Piped output keeps wide tables on one line instead of folding them at 80 columns.
    return Console(width=None if sys.stdout.isatty() else 160)


def _workspace(config: Path, address: str | None) -> Workspace:
    return Workspace(config_path=config, address=address or default_address())


def _change(
    config: Path,
    address: str | None,
    name: str,
    planner: Callable[[plan.ModelView], plan.Change],
    reason: str,
    no_wait: bool,
    timeout: float,
) -> None:
    result: ChangeResult = run_command(
        lambda: apply_change(
            _workspace(config, address),
            name,
            planner,
            reason=reason,
            wait=not no_wait,
            timeout_s=timeout,
        )
    )
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    state = "applied" if result.waited else "sent (not waited for)"
    typer.echo(f"{result.summary}: {state}; {result.config_path} updated; history recorded")


@models_app.command("list")
def list_(
    name: Annotated[str | None, typer.Argument(help="One model; default all.")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Registered versions with their registered metrics and their roles."""
    listings = run_command(lambda: reports.list_models(_workspace(config, address), name))
    if as_json:
        typer.echo(json.dumps([entry.model_dump(mode="json") for entry in listings], indent=2))
    else:
        _console().print(render.listing(listings))


@models_app.command()
def promote(
    name: Name,
    version: Version,
    config: ConfigOpt = DEFAULT_CONFIG,
    address: AddressOpt = None,
    reason: ReasonOpt = "",
    no_wait: NoWaitOpt = False,
    timeout: TimeoutOpt = 300.0,
) -> None:
    """VERSION serves everyone (and any canary ends)."""
    _change(
        config, address, name, partial(plan.plan_promote, version=version), reason, no_wait, timeout
    )


@models_app.command()
def canary(
    name: Name,
    version: Version,
    percent: Annotated[float, typer.Option("--percent", "-p", help="Share of learners, 0-100.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    address: AddressOpt = None,
    reason: ReasonOpt = "",
    no_wait: NoWaitOpt = False,
    timeout: TimeoutOpt = 300.0,
) -> None:
    """PERCENT % of learners (a stable hash of learner_id) get VERSION."""
    planner = partial(plan.plan_canary, version=version, percent=percent, now=utc_now())
    _change(config, address, name, planner, reason, no_wait, timeout)


@models_app.command()
def shadow(
    name: Name,
    version: Annotated[str | None, typer.Argument(help="The version to shadow.")] = None,
    stop: Annotated[bool, typer.Option("--stop", help="End the running shadow.")] = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    address: AddressOpt = None,
    reason: ReasonOpt = "",
    no_wait: NoWaitOpt = False,
    timeout: TimeoutOpt = 300.0,
) -> None:
    """VERSION also scores live requests; its outputs are stored, never returned."""
    if stop == (version is not None):
        typer.echo("tutor: give a VERSION to shadow, or --stop (not both)", err=True)
        raise typer.Exit(2)
    planner = (
        plan.plan_end_shadow if stop else partial(plan.plan_shadow, version=version, now=utc_now())
    )
    _change(config, address, name, planner, reason, no_wait, timeout)


@models_app.command()
def rollback(
    name: Name,
    config: ConfigOpt = DEFAULT_CONFIG,
    address: AddressOpt = None,
    reason: ReasonOpt = "",
    no_wait: NoWaitOpt = False,
    timeout: TimeoutOpt = 300.0,
) -> None:
    """End the running canary; without one, back to the previous champion."""
    _change(config, address, name, plan.plan_rollback, reason, no_wait, timeout)


@models_app.command()
def status(
    name: Annotated[str | None, typer.Argument(help="One model; default all.")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    address: AddressOpt = None,
    as_json: JsonOpt = False,
    history: Annotated[int, typer.Option("--history", help="History events shown.")] = 5,
) -> None:
    """Per model: what serves whom now, whether the file agrees, the history, live metrics."""
    statuses = run_command(
        lambda: reports.model_status(_workspace(config, address), name, history_tail=history)
    )
    if as_json:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in statuses], indent=2))
    else:
        _console().print(render.status(statuses))


@app.command("kuberay")
def kuberay_manifest(
    config: ConfigOpt = DEFAULT_CONFIG,
    out: Annotated[
        Path, typer.Option("--out", help="The manifest to write.")
    ] = kuberay.DEFAULT_OUT,
    image: Annotated[str, typer.Option("--image", help="The project's image.")] = (
        kuberay.DEFAULT_IMAGE
    ),
    gpu_image: Annotated[
        str | None, typer.Option("--gpu-image", help="The GPU workers' (default IMAGE-gpu).")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="The RayService's name.")] = (
        kuberay.DEFAULT_NAME
    ),
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 when OUT is out of date.")
    ] = False,
) -> None:
    """The KubeRay RayService manifest, generated from the Serve config."""
    options = {"image": image, "gpu_image": gpu_image, "name": name}
    current = run_command(lambda: kuberay.write_or_check(config, out, check=check, **options))
    if check and not current:
        typer.echo(f"tutor: {out} is not what {config} generates: run `make kuberay`", err=True)
        raise typer.Exit(1)
    typer.echo(f"{out} is up to date" if current else f"wrote {out}")


if __name__ == "__main__":  # python -m deployments.cli.main
    app()
