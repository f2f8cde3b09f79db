"""An application-level autoscaling policy: the graph's stages scaled together.

Serve's per-deployment policy scales each deployment on its own ongoing requests. In a graph
that is a chain of reactions: a burst first queues at the Ingress, reaches a model deployment
only as the Ingress lets it through, and the model's scale-up starts a control period or more
later. Every turn calls each model once, so the Ingress's load says in advance what each stage
will get: by Little's law a stage holds ``share`` x the turns in flight, where ``share`` is the
fraction of a turn's time spent in that stage, learnt here from the stages' own counts.

For each deployment: desired = max(its own need, as Serve's default policy computes it; the
need the Ingress's turns in flight foretell, ``turns x share / target``). Serve then applies each
deployment's min/max, delays and factors (``_apply_app_level_autoscaling_config``).

Set in serve_config.yaml as the application's
``autoscaling_policy: {policy_function: deployments.autoscaling:graph_policy}``; each deployment
keeps its ``autoscaling_config`` (bounds, target, delays). `make bench-scale-policy` measures it
against per-deployment autoscaling. Ray-free (duck-typed contexts), so it is unit-tested plainly.
"""

from __future__ import annotations

from typing import Any

INGRESS = "Ingress"
SHARE_SMOOTHING = 0.2  # weight of the newest observation in a stage's learnt share
MIN_TURNS_TO_LEARN = 1.0  # below this many turns in flight the share is noise: keep the last


def _own_need(ctx: Any) -> float:
    """Serve's default: replicas so that each holds ``target_ongoing_requests``."""
    return ctx.total_num_requests / ctx.config.get_target_ongoing_requests()


def graph_policy(contexts: dict[Any, Any]) -> tuple[dict[Any, float], dict[Any, dict]]:
    by_name = {ctx.deployment_name: (dep_id, ctx) for dep_id, ctx in contexts.items()}
    ingress = by_name.get(INGRESS)
    turns = ingress[1].total_num_requests if ingress else 0.0
    desired: dict[Any, float] = {}
    state: dict[Any, dict] = {}
    for name, (dep_id, ctx) in by_name.items():
        own = _own_need(ctx)
        previous = ctx.policy_state.get("share")
        share = previous
        if name != INGRESS and turns >= MIN_TURNS_TO_LEARN:
            observed = min(1.0, ctx.total_num_requests / turns)
            share = (
                observed
                if previous is None
                else (SHARE_SMOOTHING * observed + (1 - SHARE_SMOOTHING) * previous)
            )
        foretold = turns * share / ctx.config.get_target_ongoing_requests() if share else 0.0
        desired[dep_id] = max(own, foretold)
        state[dep_id] = {"share": share} if share is not None else {}
    return desired, state
