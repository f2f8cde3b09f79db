"""serve_config.yaml, edited the way a person would: comments, key order, quoting and
indentation kept, and only the rollout keys of one deployment's user_config changed.

ruamel.yaml's round-trip mode keeps what PyYAML drops; the indentation is guessed from the file
itself. What Serve receives is the new text read back with PyYAML, exactly as `serve deploy`
reads a file, so the application runs what the file will say.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.util import load_yaml_guess_indent

from deployments.cli.errors import RefusedError
from deployments.config import AppArgs
from deployments.lifecycle.rollout import RolloutConfig


def _yaml_value(rollout: RolloutConfig, key: str) -> Any:
    """A rollout field as the file writes it: ISO timestamps, and 50 rather than 50.0."""
    value = getattr(rollout, key)
    if value is None or isinstance(value, str):
        return value
    dumped = value.model_dump(mode="json")
    percent = dumped.get("percent")
    if isinstance(percent, float) and percent.is_integer():
        dumped["percent"] = int(percent)
    return dumped


def _faithful_yaml(original: str, path: Path) -> YAML:
    """A round-trip YAML whose indentation reproduces ``original`` exactly. ruamel's guess
    alone is not enough (it reads this project's nested lists as 4-space mappings), so the
    guess and the common layouts are each tried on a dump of the untouched file."""
    try:
        _, indent, block_seq_indent = load_yaml_guess_indent(original)
    except YAMLError as exc:
        raise RefusedError(f"{path} is not valid YAML: {exc}") from None
    layouts = [(2, 4, 2), (2, 2, 0), (indent or 2, indent or 2, block_seq_indent or 0)]
    layouts += [(4, 4, 2), (4, 6, 4), (2, (indent or 2), block_seq_indent or 0)]
    for mapping, sequence, offset in layouts:
        handler = YAML()  # round-trip mode: comments, order and quoting are kept
        handler.preserve_quotes = True
        handler.width = 4096  # never re-wrap a long line
        handler.indent(mapping=mapping, sequence=sequence, offset=offset)
        out = io.StringIO()
        handler.dump(handler.load(original), out)
        if out.getvalue() == original:
            return handler
    raise RefusedError(
        f"{path}: cannot write it back without reformatting it (unusual indentation); "
        "edit it by hand or reformat it with 2-space indents"
    )


@dataclass
class ServeConfigFile:
    """One loaded serve_config.yaml. ``set_rollout`` edits it in memory; ``text`` renders it;
    ``write`` replaces the file atomically (a crash never leaves half a config)."""

    path: Path
    data: CommentedMap
    _yaml: YAML

    @classmethod
    def load(cls, path: Path | str) -> ServeConfigFile:
        path = Path(path)
        try:
            original = path.read_text()
        except OSError as exc:
            raise RefusedError(f"cannot read {path}: {exc.strerror or exc}") from None
        handler = _faithful_yaml(original, path)
        data = handler.load(original)
        if not isinstance(data, dict) or not isinstance(data.get("applications"), list):
            raise RefusedError(f"{path} is not a Serve config (no `applications` list)")
        return cls(path=path, data=data, _yaml=handler)

    # ---- reading ---------------------------------------------------------------------------

    def application_of(self, deployment: str) -> CommentedMap:
        for app in self.data["applications"]:
            if any(d.get("name") == deployment for d in app.get("deployments") or []):
                return app
        raise RefusedError(f"{self.path} has no deployment named {deployment}")

    def app_name(self, deployment: str) -> str:
        return str(self.application_of(deployment).get("name", "default"))

    def app_args(self, deployment: str) -> AppArgs:
        return AppArgs.model_validate(dict(self.application_of(deployment).get("args") or {}))

    def user_config(self, deployment: str) -> CommentedMap:
        entry = self._entry(deployment)
        user_config = entry.get("user_config")
        if not isinstance(user_config, dict):
            raise RefusedError(f"{self.path}: deployment {deployment} has no user_config mapping")
        return user_config

    def _entry(self, deployment: str) -> CommentedMap:
        app = self.application_of(deployment)
        return next(d for d in app["deployments"] if d.get("name") == deployment)

    # ---- changing --------------------------------------------------------------------------

    def set_rollout(self, deployment: str, before: RolloutConfig, after: RolloutConfig) -> None:
        """Write the rollout fields that differ between ``before`` (what the file says) and
        ``after``; fields that did not change keep their text byte for byte."""
        user_config = self.user_config(deployment)
        for key in ("model_version", "canary", "shadow"):
            if getattr(before, key) == getattr(after, key):
                continue
            value = _yaml_value(after, key)
            if value is None:
                user_config.pop(key, None)
            else:
                # Assigning keeps an existing key where it is; a new one goes at the end.
                user_config[key] = value

    def text(self) -> str:
        out = io.StringIO()
        self._yaml.dump(self.data, out)
        return out.getvalue()

    def deploy_config(self) -> dict[str, Any]:
        """The whole config as plain data, read back from the text as `serve deploy` reads a
        file (PyYAML), so what Serve gets is what the file will hold."""
        return yaml.safe_load(self.text())

    def write(self) -> None:
        text = self.text()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.chmod(tmp, self.path.stat().st_mode & 0o777)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
