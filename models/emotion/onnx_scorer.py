"""The fine-tuned emotion encoder on ONNX Runtime: the same outputs as ``FineTunedScorer``, faster.

At load, the merged ``EmotionModel`` (token ids -> logits [n, 28], pooled [n, 384]) is exported
to ONNX once and cached on disk; later loads (other replicas, restarts) only open the cached
file, without building the torch model. How the file is made:

* torch's TorchScript exporter (``dynamo=False``, opset 17) with batch and sequence axes
  dynamic. The dynamo exporter gives the same numbers but took 3x longer (19 s against 6 s).
* The encoder is exported with eager attention: transformers' SDPA path exports as a graph that
  onnxruntime's BERT optimizer cannot fuse; eager attention fuses into 6 ``Attention`` nodes,
  ``EmbedLayerNormalization``, ``SkipLayerNormalization`` and ``BiasGelu`` (``fuse=True``). The
  fused graph measured 5-7% *more* CPU per text than the unfused one on this machine's AMD EPYC
  (benchmarks/emotion_backends.py), so it is not the default; ORT's own ORT_ENABLE_ALL graph
  optimisations run on either at session creation.
* fp32, unless the artifact holds an int8 recipe (``models.emotion.quantization``: ONNX
  Runtime's static quantization of the cached fp32 file, cached beside it). The earlier int8
  attempt, torch's dynamic quantization, cost Ekman F1.

The cache key hashes what the graph depends on: the artifact's model files (``adapter.pt``,
``head.pt``; not the thresholds or the state head, which run outside the graph), the installed
base encoder's weights and config, the torch / transformers / onnx / onnxruntime versions and
the export recipe. The file is written to a temporary name and renamed into place under a file
lock, so replicas that load at once export it once and never read a half-written file.
The cache lives in ``$TUTOR_ONNX_CACHE``, else ``var/onnx_cache`` under the repository (beside
the project's other run-time state, ignored by git, removed with it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from models.common.vocab import GOEMOTIONS_LABELS
from models.emotion.artifact import ADAPTER_FILE, HEAD_FILE, detect_format, load_model
from models.emotion.batching import DEFAULT_OVERHEAD_TOKENS, token_batches
from models.emotion.encoder import EMBEDDING_DIM, load_tokenizer, minilm_dir

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_ENV = "TUTOR_ONNX_CACHE"
OPSET = 17
# Part of the cache key: change it whenever the way the file is made changes.
RECIPE = f"torchscript-export opset{OPSET} eager-attention"
_ENCODER_FILES = ("config.json", "model.safetensors")
_VERSIONED = ("torch", "transformers", "onnx", "onnxruntime")


def default_cache_dir() -> Path:
    """``$TUTOR_ONNX_CACHE``, else ``var/onnx_cache`` in the checkout; where that cannot be
    written (a read-only image), a folder in the system's temp dir, so the replica still
    starts (it exports once per machine instead of once per checkout)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    preferred = REPO_ROOT / "var" / "onnx_cache"
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        if os.access(preferred, os.W_OK):
            return preferred
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / "tutor-onnx-cache"
    logger.warning("%s is not writable: caching the ONNX export in %s", preferred, fallback)
    return fallback


def cache_key(
    artifact_dir: Path | str, encoder_dir: Path | str | None = None, *, fuse: bool
) -> str:
    h = hashlib.sha256(f"{RECIPE} fuse={fuse}\n".encode())
    for package in _VERSIONED:
        h.update(f"{package}=={metadata.version(package)}\n".encode())
    encoder_dir = Path(encoder_dir) if encoder_dir is not None else minilm_dir()
    files = [Path(artifact_dir) / n for n in (ADAPTER_FILE, HEAD_FILE)]
    for path in files + [encoder_dir / n for n in _ENCODER_FILES]:
        with path.open("rb") as f:
            h.update(f"{path.name}:".encode() + hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()[:24]


def export_model(
    artifact_dir: Path | str,
    out: Path | str,
    *,
    encoder_dir: Path | None = None,
    fuse: bool = False,
) -> dict[str, float]:
    """Write the merged model of a fine-tuned artifact to ``out`` as ONNX; the seconds it took."""
    import torch

    from models.emotion.encoder import load_tokenizer as _tokenizer

    started = time.perf_counter()
    model = load_model(artifact_dir, encoder_dir=encoder_dir).merge().eval()
    model.encoder.set_attn_implementation("eager")  # fusable attention (see the docstring)

    class Outputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            pooled = self.model.pool(input_ids, attention_mask)  # [n, 384]
            return self.model.head(pooled)[0], pooled  # logits [n, 28]

    # Two rows of different lengths, so no shape is specialised to the example.
    example = _tokenizer(encoder_dir)(["a short one", "and a somewhat longer example"],
                                      padding=True, return_tensors="pt")  # fmt: skip
    dynamic = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    loaded = time.perf_counter()
    with torch.inference_mode():
        torch.onnx.export(
            Outputs().eval(), (example["input_ids"], example["attention_mask"]), str(out),
            dynamo=False, opset_version=OPSET, input_names=["input_ids", "attention_mask"],
            output_names=["logits", "pooled"],
            dynamic_axes={**dynamic, "logits": {0: "batch"}, "pooled": {0: "batch"}},
        )  # fmt: skip
    exported = time.perf_counter()
    if fuse:
        from onnxruntime.transformers import optimizer

        config = model.encoder.config
        fused = optimizer.optimize_model(
            str(out), model_type="bert", num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size, opt_level=0,
        )  # fmt: skip
        fused.save_model_to_file(str(out))
    return {
        "load_torch_s": loaded - started,
        "export_s": exported - loaded,
        "fuse_s": time.perf_counter() - exported,
    }


def cached_model(
    artifact_dir: Path | str,
    *,
    cache_dir: Path | str | None = None,
    encoder_dir: Path | None = None,
    fuse: bool = False,
    quantization: dict | None = None,
) -> tuple[Path, dict[str, float]]:
    """The cached ONNX file of this artifact, exported first if missing; (path, timings).

    With a ``quantization`` recipe (``models.emotion.quantization``), the int8 file made from
    the cached fp32 one, made first if missing."""
    if detect_format(artifact_dir) < 2:
        raise ValueError(
            f"{artifact_dir}: the ONNX backend runs fine-tuned (v2 and later) artifacts only; "
            "this one is v1 (frozen encoder + MLP head): load it with backend='torch'"
        )
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    path = cache_dir / f"emotion-{cache_key(artifact_dir, encoder_dir, fuse=fuse)}.onnx"
    timings = {"key_s": time.perf_counter() - started}
    timings |= _made_once(
        path, lambda tmp: export_model(artifact_dir, tmp, encoder_dir=encoder_dir, fuse=fuse)
    )
    if quantization is None:
        return path, timings
    from models.emotion.quantization import quantize, recipe_key

    fp32 = path
    path = cache_dir / f"{fp32.stem}-int8-{recipe_key(quantization)}.onnx"

    def make_int8(tmp: str) -> None:
        # Only on a cache miss: a replica that finds the file reads neither of these.
        tokenizer = load_tokenizer(encoder_dir)
        tokens = min(int(quantization["calibration_tokens"]), artifact_max_length(artifact_dir))

        def padded_inputs(texts: list[str]) -> dict[str, np.ndarray]:
            encoded = tokenizer(texts, padding="max_length", truncation=True,
                                max_length=tokens, return_tensors="np")  # fmt: skip
            return {k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask")}

        quantize(fp32, tmp, quantization, padded_inputs)

    started = time.perf_counter()
    _made_once(path, make_int8)
    timings["quantize_s"] = time.perf_counter() - started
    return path, timings


def artifact_max_length(artifact_dir: Path | str) -> int:
    """The token length the version was trained with (its adapter's config)."""
    import torch

    blob = torch.load(Path(artifact_dir) / ADAPTER_FILE, map_location="cpu", weights_only=True)
    return int(blob["config"]["max_length"])


def _made_once(path: Path, make) -> dict[str, float]:
    """Run ``make(tmp)`` unless ``path`` exists, then rename ``tmp`` into place, under a file
    lock: replicas that load at once make it once and never read a half-written file."""
    from filelock import FileLock

    if path.is_file():
        return {}
    with FileLock(str(path) + ".lock"):
        if path.is_file():  # another replica made it while this one waited
            return {}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        os.close(fd)
        try:
            timings = make(tmp) or {}
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from replicas of another user
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    logger.info("made %s in %.1f s", path, sum(timings.values()))
    return timings


def session_options(threads: int | None = None, *, spinning: bool = False):
    """fp32 CPU session: every graph optimisation, one sequential stream of ``threads`` threads.

    Spinning is off by default: on a few shared cores, idle pool threads spinning for work take
    CPU from the rest of the serving path (measured in benchmarks/emotion_backends.py).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3  # warnings about unused initializers are not actionable
    return options


class OnnxScorer:
    """v2 and later on ONNX Runtime: texts -> (logits [n, 28], pooled [n, 384]), float64.

    Same interface and the same numbers (within float noise) as ``FineTunedScorer``; a text
    scores the same alone or in a batch, since padding is masked out of attention and pooling.
    """

    def __init__(
        self,
        model_path: Path | str,
        tokenizer,
        *,
        max_length: int,
        threads: int | None = None,
        spinning: bool = False,
        batch_size: int = 64,
        overhead_tokens: float = DEFAULT_OVERHEAD_TOKENS,
    ) -> None:
        import onnxruntime as ort

        self.model_path = Path(model_path)
        self.session = ort.InferenceSession(
            str(model_path), session_options(threads, spinning=spinning),
            providers=["CPUExecutionProvider"],
        )  # fmt: skip
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.overhead_tokens = overhead_tokens

    @classmethod
    def from_artifact(
        cls,
        artifact_dir: Path | str,
        *,
        threads: int | None = None,
        cache_dir: Path | str | None = None,
        encoder_dir: Path | None = None,
        fuse: bool = False,
        quantization: dict | None = None,
        **kwargs,
    ) -> OnnxScorer:
        """``quantization``: the recipe to run with; None runs the artifact's own
        (``quantization.json``, an int8 version), else fp32."""
        from models.emotion.quantization import read_recipe

        path, _ = cached_model(
            artifact_dir, cache_dir=cache_dir, encoder_dir=encoder_dir, fuse=fuse,
            quantization=quantization if quantization is not None else read_recipe(artifact_dir),
        )  # fmt: skip
        max_length = artifact_max_length(artifact_dir)
        return cls(
            path, load_tokenizer(encoder_dir), max_length=max_length, threads=threads, **kwargs
        )

    def logits(self, texts: list[str]) -> np.ndarray:
        return self.outputs(texts)[0]

    def outputs(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(logits [n, 28], pooled embeddings [n, 384]), float64, in the order of ``texts``."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        logits_out = np.zeros((len(texts), len(GOEMOTIONS_LABELS)))
        pooled_out = np.zeros((len(texts), EMBEDDING_DIM))
        batches = token_batches(
            self.tokenizer, texts, max_length=self.max_length, batch_size=self.batch_size,
            overhead_tokens=self.overhead_tokens,
        )  # fmt: skip
        for idx, input_ids, attention_mask in batches:
            logits, pooled = self.session.run(
                None, {"input_ids": input_ids, "attention_mask": attention_mask}
            )
            logits_out[idx] = logits
            pooled_out[idx] = pooled
        return logits_out, pooled_out
