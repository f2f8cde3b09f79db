"""A copy of the real serve_config.yaml, a real SQLite store in a temporary directory and a
fake of Serve's REST client that answers the way get_serve_details does."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deployments.cli.operations import Workspace
from deployments.config import TutorSettings
from tests.support.serve_process import served_version

REPO_ROOT = Path(__file__).resolve().parents[3]
REAL_CONFIG = REPO_ROOT / "serve_config.yaml"
# The emotion champion the real config serves (the tests promote, canary and roll back around it).
SERVED_EMOTION = served_version("Emotion", REAL_CONFIG)


class FakeServe:
    """Holds the deployed config and reports it back as Serve's status would (through JSON,
    like the HTTP API). ``reject(config)`` true: the app goes DEPLOY_FAILED with that config.
    ``stuck``: the change never shows up (a timeout)."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        app_status: str = "RUNNING",
        reject: Callable[[dict[str, Any]], bool] = lambda config: False,
        stuck: bool = False,
    ) -> None:
        self.running = json.loads(json.dumps(config))
        self.app_status = app_status
        self.reject = reject
        self.stuck = stuck
        self.deployed: list[dict[str, Any]] = []

    def deploy_applications(self, config: dict[str, Any]) -> None:
        self.deployed.append(config)
        if not self.stuck:
            self.running = json.loads(json.dumps(config))

    def get_serve_details(self) -> dict[str, Any]:
        failed = self.reject(self.running)
        apps = {}
        for app in self.running["applications"]:
            apps[app.get("name", "default")] = {
                "status": "DEPLOY_FAILED" if failed else self.app_status,
                "message": "",
                "deployments": {
                    d["name"]: {
                        "status": "DEPLOY_FAILED" if failed else "HEALTHY",
                        "message": "reconfigure() raised: bad user_config" if failed else "",
                        "deployment_config": {
                            "name": d["name"],
                            "user_config": d.get("user_config"),
                        },
                    }
                    for d in app["deployments"]
                },
            }
        return {"applications": apps}


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    target = tmp_path / "serve_config.yaml"
    shutil.copy(REAL_CONFIG, target)
    return target


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tutor.db'}"


def make_workspace(
    config_path: Path, store_uri: str, serve: FakeServe | None = None, **kw: Any
) -> Workspace:
    def connect(address: str) -> FakeServe:
        assert serve is not None, "this command should not talk to Serve"
        return serve

    return Workspace(
        config_path=config_path,
        address="http://127.0.0.1:8265",
        connect=connect,
        settings=TutorSettings(store_uri=store_uri),
        actor="cli:test",
        **kw,
    )
