"""`tutor keys create|list|revoke`: API keys, straight in the store (no Ray, no running app).

The store is the app's: ``--store-uri``, else the config file's ``args.store_uri``, else
``$TUTOR_STORE_URI``, else the default (``sqlite:///var/tutor.db`` from where it runs), as
build_app resolves it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from deployments.cli.errors import ApplyError, RefusedError, run_command
from deployments.config import AppArgs, TutorSettings, absolute_store_uri
from deployments.security.keys import (
    DEFAULT_MAX_CONCURRENT_TURNS,
    DEFAULT_RPM,
    new_key,
    parse_scopes,
)
from store import API_SCOPES, ApiKeyRecord, TutorStore, open_store

app = typer.Typer(
    help="API keys: create (shown once), list (no secrets), revoke.", no_args_is_help=True
)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store-uri",
        help="The app's store (default: the config's args.store_uri, $TUTOR_STORE_URI, "
        "sqlite:///var/tutor.db).",
    ),
]
ConfigOpt = Annotated[
    Path, typer.Option("--config", help="The Serve config, read for its args.store_uri.")
]
DEFAULT_CONFIG = Path("serve_config.yaml")


def store_uri(explicit: str | None, config: Path) -> str:
    """Where the app keeps its store, resolved as build_app does."""
    if explicit:
        return absolute_store_uri(explicit)
    args: dict = {}
    if config.is_file():
        loaded = yaml.safe_load(config.read_text()) or {}
        apps = loaded.get("applications") or [{}]
        args = {"store_uri": (apps[0].get("args") or {}).get("store_uri")}
    resolved = AppArgs.model_validate(args).resolved_store_uri(TutorSettings())
    return absolute_store_uri(resolved)


@contextmanager
def opened(uri: str) -> Iterator[TutorStore]:
    try:
        store = open_store(uri)
    except Exception as exc:
        raise ApplyError(f"cannot open the store {uri}: {exc}") from exc
    try:
        yield store
    finally:
        store.close()


def create_key(
    store: TutorStore,
    *,
    name: str,
    scopes: str,
    tenant: str | None,
    rpm: int,
    max_turns: int,
    now: float,
) -> tuple[str, ApiKeyRecord]:
    """A new key and its stored record. RefusedError for bad arguments or a taken name."""
    try:
        key, record = new_key(
            name=name,
            scopes=parse_scopes(scopes),
            tenant=tenant,
            rpm=rpm,
            max_concurrent_turns=max_turns,
            now=now,
        )
    except ValueError as exc:  # pydantic's ValidationError included (e.g. rpm 0)
        raise RefusedError(str(exc)) from None
    if not store.add_api_key(record):
        raise RefusedError(
            f"a key named {name!r} exists and is not revoked: revoke it or choose another name"
        )
    return key, record


def revoke_key(store: TutorStore, name: str, *, now: float) -> None:
    if not store.revoke_api_key(name, now=now):
        raise RefusedError(f"no live key named {name!r}")


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _limits(record: ApiKeyRecord) -> str:
    return f"{record.rpm} requests/min, {record.max_concurrent_turns} concurrent turns"


@app.command()
def create(
    name: Annotated[str, typer.Option("--name", help="The key's name (for list and revoke).")],
    scopes: Annotated[
        str, typer.Option("--scopes", help=f"Comma-separated, of: {', '.join(API_SCOPES)}.")
    ],
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Bind the key to one tenant's learners.")
    ] = None,
    rpm: Annotated[int, typer.Option("--rpm", min=1, help="Requests per minute.")] = DEFAULT_RPM,
    max_turns: Annotated[
        int, typer.Option("--max-turns", min=1, help="Turns at work at once.")
    ] = DEFAULT_MAX_CONCURRENT_TURNS,
    store: StoreOpt = None,
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Create a key; it is printed once, as the last line (only its hash is stored)."""

    def work() -> tuple[str, ApiKeyRecord]:
        with opened(store_uri(store, config)) as opened_store:
            return create_key(
                opened_store,
                name=name,
                scopes=scopes,
                tenant=tenant,
                rpm=rpm,
                max_turns=max_turns,
                now=time.time(),
            )

    key, record = run_command(work)
    typer.echo(
        f"created key {record.name!r}: scopes {','.join(record.scopes)}; "
        f"tenant {record.tenant or '-'}; {_limits(record)}",
    )
    typer.echo("the key is shown only this once; clients send it as `Authorization: Bearer <key>`")
    typer.echo(key)


@app.command("list")
def list_(
    store: StoreOpt = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every key, revoked ones included, without secrets."""

    def work() -> list[ApiKeyRecord]:
        with opened(store_uri(store, config)) as opened_store:
            return opened_store.list_api_keys()

    records = run_command(work)
    if as_json:
        rows = [r.model_dump(exclude={"key_hash"}) for r in records]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "scopes", "tenant", "rpm", "max turns", "created", "revoked")
    for r in records:
        table.add_row(
            r.name,
            ",".join(r.scopes),
            r.tenant or "-",
            str(r.rpm),
            str(r.max_concurrent_turns),
            _when(r.created_at),
            _when(r.revoked_at),
        )
    Console(width=160).print(table)


@app.command()
def revoke(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    store: StoreOpt = None,
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Revoke the live key NAME: refused by every Ingress replica within its key cache TTL
    (key_cache_ttl_s, 5 s by default)."""

    def work() -> None:
        with opened(store_uri(store, config)) as opened_store:
            revoke_key(opened_store, name, now=time.time())

    run_command(work)
    typer.echo(f"revoked key {name!r}: refused everywhere within key_cache_ttl_s (default 5 s)")
