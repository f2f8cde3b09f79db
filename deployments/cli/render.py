"""Tables for people (rich); --json output is the reports' own dump."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from deployments.cli.reports import ModelListing, ModelStatus, RolloutState
from store.records import RolloutEventRecord

# The point of an estimate in deployments.lifecycle.stats (MeanEstimate, Proportion, Interval).
ESTIMATE_KEYS = ("mean", "share", "value")


def number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def estimate(value: Any) -> str:
    """One figure of a report: a number, or an estimate dict (mean/share/value with its 95%
    interval and count) as "0.53 [0.50, 0.56] n=120"."""
    if not isinstance(value, dict):
        return number(value)
    point = next((value[k] for k in ESTIMATE_KEYS if k in value), None)
    if point is None:
        return ", ".join(f"{k}={estimate(v)}" for k, v in value.items())
    text = number(point)
    if value.get("ci_low") is not None and value.get("ci_high") is not None:
        text += f" [{number(value['ci_low'])}, {number(value['ci_high'])}]"
    if "n" in value:
        text += f" n={value['n']}"
    return text


def _when(ts: float | datetime | None) -> str:
    if ts is None:
        return "-"
    moment = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts).astimezone()
    return moment.isoformat(timespec="seconds")


def listing(listings: list[ModelListing]) -> RenderableType:
    parts: list[RenderableType] = []
    for entry in listings:
        if not entry.versions:
            parts.append(Text(f"{entry.model} ({entry.deployment})", style="italic"))
            parts.extend(Text(f"  {note}", style="yellow") for note in entry.notes)
            continue
        labels = list(dict.fromkeys(k for row in entry.versions for k in row.metrics))
        table = Table(title=f"{entry.model} ({entry.deployment})", title_justify="left")
        table.add_column("version")
        table.add_column("role")
        for label in labels:
            table.add_column(label, justify="right")
        table.add_column("registered")
        table.add_column("dataset", overflow="fold", max_width=40)
        for row in entry.versions:
            table.add_row(
                row.version,
                ", ".join(row.roles),
                *(number(row.metrics.get(label)) for label in labels),
                row.created_at[:10],
                row.dataset,
            )
        parts.append(table)
        parts.extend(Text(f"  {note}", style="yellow") for note in entry.notes)
    return Group(*parts)


def _rollout_line(state: RolloutState | None) -> str:
    if state is None:
        return "not running"
    text = f"champion {state.champion}"
    if state.canary:
        text += (
            f", canary {state.canary} for {state.percent:g}% since {_when(state.canary_started_at)}"
        )
    if state.shadow:
        text += f", shadow {state.shadow} since {_when(state.shadow_started_at)}"
    return text


def history_table(events: list[RolloutEventRecord]) -> Table:
    table = Table(title="history (latest last)", title_justify="left", show_edge=False)
    for column in ("when", "action", "from", "to", "%", "by", "reason"):
        table.add_column(column)
    for e in events:
        table.add_row(
            _when(e.ts),
            e.action,
            e.from_version or "-",
            e.to_version or "-",
            number(e.percent),
            e.actor,
            e.reason,
        )
    return table


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    """A version's report as (metric, figure) pairs; estimates stay whole."""
    is_estimate = isinstance(value, dict) and any(k in value for k in ESTIMATE_KEYS)
    if isinstance(value, dict) and not is_estimate:
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else key, inner)
    elif not isinstance(value, list):
        yield prefix, value


def report_table(report: dict[str, Any]) -> Table:
    versions = report.get("versions") or {}
    champion = report.get("champion")
    if champion in versions:  # the champion's column first
        versions = {champion: versions[champion], **versions}
    table = Table(title="live, per version", title_justify="left", show_edge=False)
    table.add_column("metric")
    for version in versions:
        table.add_column(version, justify="right")
    rows: dict[str, dict[str, Any]] = {}
    for version, body in versions.items():
        body = {k: v for k, v in body.items() if k != "version" and v is not None}
        for metrics in body.values():
            if isinstance(metrics, dict):
                metrics.pop("kind", None)  # the union tag: the model, already in the title
        for metric, value in _flatten("", body):
            rows.setdefault(metric, {})[version] = value
    for metric, values in rows.items():
        table.add_row(metric, *(estimate(values.get(v)) for v in versions))
    return table


def comparison_table(candidate: str, comparison: dict[str, Any]) -> Table:
    deltas = [d for d in _deltas(comparison) if isinstance(d, dict) and "metric" in d]
    table = Table(title=f"{candidate} against the champion", title_justify="left", show_edge=False)
    for column in ("metric", "champion", "candidate", "delta", "p (worse)", "worse", "n"):
        table.add_column(column)
    for d in deltas:
        table.add_row(
            d["metric"],
            number(d.get("champion")),
            number(d.get("candidate")),
            number(d.get("delta")),
            number(d.get("p_value")),
            Text("WORSE", style="bold red") if d.get("worse") else Text("-"),
            f"{d.get('n_champion', 0)}/{d.get('n_candidate', 0)}",
        )
    return table


def _deltas(comparison: dict[str, Any]) -> list[Any]:
    if isinstance(comparison.get("deltas"), list):
        return comparison["deltas"]
    return [v for v in comparison.values() if isinstance(v, dict)]


def status(statuses: list[ModelStatus]) -> RenderableType:
    parts: list[RenderableType] = []
    for s in statuses:
        parts.append(
            Text(
                f"{s.model} ({s.deployment} {s.deployment_status or '?'}, "
                f"app {s.app} {s.app_status})",
                style="bold",
            )
        )
        parts.append(Text(f"  serving: {_rollout_line(s.live)}"))
        agrees = "agrees" if s.file_agrees else f"DIFFERS: {_rollout_line(s.file)}"
        parts.append(Text(f"  serve_config.yaml: {agrees}", style=None if s.file_agrees else "red"))
        stopped = (s.live or s.file).guardrail_stopped
        if stopped:
            parts.append(
                Text(
                    f"  guardrail: {stopped}; the next change to {s.model} removes it "
                    "from serve_config.yaml",
                    style="red",
                )
            )
        if s.history:
            parts.append(history_table(s.history))
        if s.report is not None:
            if s.report.get("versions"):
                parts.append(Text(f"  live since {_when(s.since)}:"))
                parts.append(report_table(s.report))
            else:
                parts.append(Text(f"  no live traffic recorded since {_when(s.since)}"))
        for candidate, comparison in s.comparisons.items():
            parts.append(comparison_table(candidate, comparison))
        parts.extend(Text(f"  {note}", style="yellow") for note in s.notes)
        parts.append(Text(""))
    return Group(*parts)
