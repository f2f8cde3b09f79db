"""Load whichever knowledge tracer an artifact holds, by its config's ``architecture``.

``lr`` loads ``models.difficulty.lr_tracer.LRTracer`` (numpy only); ``stack`` loads
``models.difficulty.stack_tracer.StackedTracer`` (whose members load through here); anything
else, including v1's artifacts without the field, loads
``models.difficulty.tracer.KnowledgeTracer``, imported only then so that an LR deployment never
imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.difficulty.lr_tracer import ARCHITECTURE as LR_ARCHITECTURE
from models.difficulty.lr_tracer import LRTracer
from models.difficulty.stack_tracer import ARCHITECTURE as STACK_ARCHITECTURE
from models.difficulty.stack_tracer import MEMBERS_DIR, StackedTracer
from models.difficulty.tracer_api import CONFIG_FILE, SKILL_NAMES_FILE


def artifact_architecture(artifact_dir: Path | str) -> str:
    """The artifact's ``architecture`` ("dkt" when it has no ``tracer_config.json``: v1's
    legacy file names, always a torch tracer)."""
    config_path = Path(artifact_dir) / CONFIG_FILE
    if not config_path.is_file():
        return "dkt"
    return str(json.loads(config_path.read_text()).get("architecture", "dkt"))


def load_tracer(artifact_dir: Path | str, device: str = "cpu", **kwargs: Any) -> Any:
    """The tracer in ``artifact_dir``: an ``LRTracer``, a ``StackedTracer`` (of any of these) or
    a ``KnowledgeTracer``; keyword arguments as their ``from_artifact`` takes them
    (``max_history``, ``encoding_cache_size``)."""
    architecture = artifact_architecture(artifact_dir)
    if architecture == LR_ARCHITECTURE:
        return LRTracer.from_artifact(artifact_dir, device, **kwargs)
    if architecture == STACK_ARCHITECTURE:
        return StackedTracer.from_artifact(artifact_dir, device, **kwargs)
    from models.difficulty.tracer import KnowledgeTracer

    return KnowledgeTracer.from_artifact(artifact_dir, device, **kwargs)


def artifact_skill_names(artifact_dir: Path | str) -> dict[str, str]:
    """The skill names an artifact ships, without loading its model: a stack's are its primary
    member's (``members/<primary>/``), any other tracer's are beside its config."""
    artifact_dir = Path(artifact_dir)
    if artifact_architecture(artifact_dir) == STACK_ARCHITECTURE:
        config = json.loads((artifact_dir / CONFIG_FILE).read_text())
        primary = config.get("primary") or config["members"][0]
        artifact_dir = artifact_dir / MEMBERS_DIR / primary
    return json.loads((artifact_dir / SKILL_NAMES_FILE).read_text())
