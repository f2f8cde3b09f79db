"""The off-policy job's reports: its estimates as Markdown, and, given the simulator's truth,
each estimate checked against it (``python -m pipelines.personalization.off_policy_eval``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from models.personalization import off_policy as ope


def load_truth(path: Path) -> dict[str, dict[str, float]]:
    """``{"on_logged_contexts": {policy: value}, "on_policy": {policy: value}}`` (the second
    optional), as ``pipelines.personalization.simulate --log-policy`` writes it."""
    truth = json.loads(path.read_text())
    if not isinstance(truth, dict) or not isinstance(truth.get("on_logged_contexts"), dict):
        raise ValueError(f"{path}: no 'on_logged_contexts' mapping of policy -> true value")
    sections = {name: truth.get(name) or {} for name in ("on_logged_contexts", "on_policy")}
    for name, values in sections.items():
        if not all(isinstance(v, int | float) and np.isfinite(v) for v in values.values()):
            raise ValueError(f"{path}: {name} must map policies to finite numbers")
    return {name: {k: float(v) for k, v in values.items()} for name, values in sections.items()}


def truth_section(estimates, truth, *, source: str, within: float = 2.0) -> dict[str, Any]:
    """The candidates that have a truth on the logged contexts, checked against it."""
    on_logged, on_policy = truth["on_logged_contexts"], truth["on_policy"]
    checks = {
        name: ope.TruthCheck.of(estimate, on_logged[name], within)
        for name, estimate in estimates.items()
        if name in on_logged
    }
    return {
        "source": source,
        "within_std_errors": within,
        "policies": {
            name: asdict(check) | {"truth_on_policy": on_policy.get(name)}
            for name, check in checks.items()
        },
        **ope.summarise_truth_checks(checks),  # "estimators" and "dr_ips_std_error_ratio"
        "reference": {name: v for name, v in on_logged.items() if name not in estimates},
    }


def markdown_table(report: Mapping[str, Any]) -> str:
    def cell(estimate: Mapping[str, Any]) -> str:
        if estimate["value"] is None:
            return "n/a"
        return f"{estimate['value']:.3f} ± {estimate['std_error']:.3f}"

    lines = [
        f"Estimated mean reward ({report['reward_source']} rewards) from "
        f"{report['rows_used']} of {report['rows_read']} logged turns.",
        "",
        "| policy | IPS | SNIPS | DM | DR | ESS |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in report["policies"].items():
        row = (cell(e["ips"]), cell(e["snips"]), cell(e["dm"]), cell(e["dr"]), f"{e['ess']:.0f}")
        lines.append(f"| {name} | {' | '.join(row)} |")
    logged = report["logging"]
    observed = cell({"value": logged["mean_reward"], "std_error": logged["std_error"]})
    lines.append(f"| logging policy (observed) | {observed} | | | | {logged['n']} |")
    dropped = ", ".join(f"{k} {v}" for k, v in report["dropped"].items() if v) or "none"
    lines += ["", f"Dropped turns: {dropped}.", f"Arm statistics: {report['stats_source']}."]
    if "truth" in report:
        lines += ["", *truth_table(report["truth"])]
    return "\n".join(lines) + "\n"


LABELS = {"ips": "IPS", "snips": "SNIPS", "dm": "DM", "dr": "DR"}


def truth_table(truth: Mapping[str, Any]) -> list[str]:
    """Each estimate's error (estimate - truth) and its size in standard errors, as Markdown."""

    def error(e: Mapping[str, Any] | None) -> str:
        if e is None:
            return "n/a"
        size = "" if e["std_errors"] is None else f" ({e['std_errors']:.1f} se)"
        return f"{e['error']:+.4f}{size}" + ("" if e["within"] else " **outside**")

    within = truth["within_std_errors"]
    lines = [
        f"Errors against the truth on the logged contexts ({truth['source']}), in standard "
        f"errors; **outside**: more than {within:g} away.",
        "",
        "| policy | truth on the logged contexts | truth when run "
        f"| {' | '.join(f'{label} error' for label in LABELS.values())} | DR se / IPS se |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in truth["policies"].items():
        run, ratio = row["truth_on_policy"], row["dr_ips_std_error_ratio"]
        cells = [f"{row['truth']:.4f}", "" if run is None else f"{run:.4f}"]
        cells += [error(row[e]) for e in LABELS] + ["" if ratio is None else f"{ratio:.2f}"]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    summary = truth["estimators"]
    done = [e for e in LABELS if summary[e]["compared"]]
    mae = ", ".join(f"{LABELS[e]} {summary[e]['mean_abs_error']:.4f}" for e in done)
    inside = ", ".join(
        f"{LABELS[e]} {summary[e]['within']} of {summary[e]['compared']}" for e in done
    )
    lines += ["", f"Mean absolute error: {mae}.", f"Within {within:g} standard errors: {inside}."]
    if (ratio := truth["dr_ips_std_error_ratio"])["mean"] is not None:
        lines.append(
            f"DR's standard error over IPS's: mean {ratio['mean']:.2f} "
            f"({ratio['min']:.2f} to {ratio['max']:.2f})."
        )
    if truth["reference"]:
        others = ", ".join(f"{name} {v:.4f}" for name, v in truth["reference"].items())
        lines.append(f"Truths of no candidate here: {others}.")
    return lines
