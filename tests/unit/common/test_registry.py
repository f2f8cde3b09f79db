"""The file-based model registry: versions, immutability, derived versions."""

from __future__ import annotations

import pytest

from models.common.registry import METADATA_FILE, ModelRegistry


def _register(registry: ModelRegistry, tmp_path, payload: str, **kwargs):
    source = tmp_path / f"src-{payload}"
    source.mkdir()
    (source / "weights.bin").write_text(payload)
    (source / "extra.json").write_text("{}")
    return registry.register("m", source, dataset="d", code_version="c", **kwargs)


def test_versions_count_up_and_latest_resolves_to_the_newest(tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    assert _register(registry, tmp_path, "a").version == "v1"
    assert _register(registry, tmp_path, "b", metrics={"auc": 0.7}).version == "v2"
    assert registry.versions("m") == ["v1", "v2"]
    latest = registry.load("m")
    assert latest.metadata.version == "v2"
    assert latest.metadata.metrics == {"auc": 0.7}
    assert (latest.path / "weights.bin").read_text() == "b"


def test_a_registered_version_is_never_overwritten(tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    _register(registry, tmp_path, "a")
    with pytest.raises(FileExistsError):
        _register(registry, tmp_path, "b", version="v1")
    assert (registry.load("m", "v1").path / "weights.bin").read_text() == "a"


def test_a_derived_version_keeps_the_source_files_drops_some_and_adds_its_own(tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    _register(registry, tmp_path, "a")
    source = registry.load("m", "v1")
    derived = registry.register_derived(
        source,
        lambda directory: (directory / "head.npz").write_text("new"),
        drop=("extra.json",),
        dataset="d + more",
        code_version="c2",
        metrics={"acc": 0.9},
        config={"from": "v1"},
    )
    assert derived.version == "v2"
    assert derived.files == ["head.npz", "weights.bin"]
    path = registry.load("m", "v2").path
    assert (path / "weights.bin").read_text() == "a"
    assert sorted(p.name for p in path.iterdir()) == ["head.npz", METADATA_FILE, "weights.bin"]
    assert (source.path / "extra.json").is_file()  # the source is untouched
