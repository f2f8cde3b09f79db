"""A versioned, file-based model registry: each version is a folder of weights plus metadata.

Layout: ``<root>/<model name>/<version>/`` holding the artifact's files and ``metadata.json``.
Versions are ``v1``, ``v2``, ...; a registered version is never overwritten, so a version named
in ``serve_config.yaml`` always means the same weights.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_REGISTRY_ROOT = Path(__file__).resolve().parents[1] / "artifacts"
METADATA_FILE = "metadata.json"
_VERSION = re.compile(r"^v(\d+)$")


class ArtifactNotFoundError(LookupError):
    """The registry has no such model or version."""


@dataclass(frozen=True)
class ArtifactMetadata:
    name: str
    version: str
    created_at: str
    dataset: str
    code_version: str
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    # How the record came to be when that is not the plain story (e.g. a corrected field).
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Artifact:
    path: Path
    metadata: ArtifactMetadata

    def file(self, name: str) -> Path:
        return self.path / name


class ModelRegistry:
    def __init__(self, root: Path | str = DEFAULT_REGISTRY_ROOT) -> None:
        self.root = Path(root)

    def versions(self, name: str) -> list[str]:
        model_dir = self.root / name
        if not model_dir.is_dir():
            return []
        found = [p.name for p in model_dir.iterdir() if _VERSION.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def resolve_version(self, name: str, version: str = "latest") -> str:
        versions = self.versions(name)
        if version == "latest":
            if not versions:
                raise ArtifactNotFoundError(f"no versions of {name!r} in {self.root}")
            return versions[-1]
        if version not in versions:
            raise ArtifactNotFoundError(
                f"{name!r} has no version {version!r} in {self.root}; known: {versions}"
            )
        return version

    def load(self, name: str, version: str = "latest") -> Artifact:
        version = self.resolve_version(name, version)
        path = self.root / name / version
        raw = json.loads((path / METADATA_FILE).read_text())
        return Artifact(path=path, metadata=ArtifactMetadata(**raw))

    def register(
        self,
        name: str,
        source_dir: Path | str,
        *,
        dataset: str,
        code_version: str,
        metrics: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        version: str | None = None,
    ) -> ArtifactMetadata:
        """Copy the files of ``source_dir`` into a new version and write its metadata."""
        source_dir = Path(source_dir)
        existing = self.versions(name)
        if version is None:
            version = f"v{int(existing[-1][1:]) + 1}" if existing else "v1"
        if not _VERSION.match(version):
            raise ValueError(f"version must look like v1, v2, ...; got {version!r}")
        target = self.root / name / version
        if target.exists():
            raise FileExistsError(f"{name} {version} is already registered at {target}")
        # Relative paths: an artifact may nest others (a stacked model's members/<name>/).
        files = sorted(
            p.relative_to(source_dir).as_posix() for p in source_dir.rglob("*") if p.is_file()
        )
        if not files:
            raise ValueError(f"{source_dir} holds no files to register")
        target.mkdir(parents=True)
        for file_name in files:
            (target / file_name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source_dir / file_name, target / file_name)
        metadata = ArtifactMetadata(
            name=name,
            version=version,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            dataset=dataset,
            code_version=code_version,
            metrics=metrics or {},
            config=config or {},
            files=files,
        )
        (target / METADATA_FILE).write_text(json.dumps(asdict(metadata), indent=2) + "\n")
        return metadata

    def register_derived(
        self,
        source: Artifact,
        add_files: Callable[[Path], object],
        *,
        drop: tuple[str, ...] = (),
        dataset: str,
        code_version: str,
        metrics: dict[str, Any],
        config: dict[str, Any],
    ) -> ArtifactMetadata:
        """A new version made of ``source``'s files (less ``drop``) plus what ``add_files`` writes.

        For versions that change one part of a model (a calibration, a head) and keep the rest.
        """
        with tempfile.TemporaryDirectory() as tmp:
            for name in source.metadata.files:
                if name != METADATA_FILE and name not in drop:
                    (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source.path / name, Path(tmp) / name)
            add_files(Path(tmp))
            return self.register(
                source.metadata.name,
                tmp,
                dataset=dataset,
                code_version=code_version,
                metrics=metrics,
                config=config,
            )
