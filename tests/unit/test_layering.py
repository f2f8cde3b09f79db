"""The layout's rules, checked: Serve stays at the edge, models never import Ray, dependencies
flow one way (deployments -> models, store; pipelines -> models, store), and no module grows
past the size a reader can hold (~400 lines)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The Serve edge: the deployment classes, the graph builder and Ray's metrics they create.
SERVE_EDGE = {
    "deployments/app.py",
    "deployments/ingress.py",
    "deployments/emotion.py",
    "deployments/emotion_ingress.py",
    "deployments/http_edge.py",
    "deployments/difficulty.py",
    "deployments/personalization.py",
    "deployments/llm_router.py",
    "deployments/local_llm.py",
    "deployments/telemetry.py",
    "deployments/rollout_metrics.py",
    "deployments/replica_context.py",
    # The `tutor` command reaches the running application through Serve's deploy API.
    "deployments/cli/serve_client.py",
    # Ray's worker setup hook for `make serve`: Serve's own listeners on loopback.
    "deployments/loopback.py",
}
MAX_LINES = 400


def _modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Top-level package names a module imports (at any depth of its code)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_models_and_store_import_neither_ray_nor_the_layers_above():
    offenders = {
        _relative(p): sorted(_imports(p) & {"ray", "deployments", "pipelines"})
        for p in _modules("models", "store")
    }
    assert {m: found for m, found in offenders.items() if found} == {}


def test_only_the_serve_edge_of_deployments_imports_ray():
    importing = {_relative(p) for p in _modules("deployments") if "ray" in _imports(p)}
    assert importing <= SERVE_EDGE, f"Ray imported outside the edge: {importing - SERVE_EDGE}"


def test_the_tutoring_logic_and_the_models_load_without_ray():
    """Not even through another module: a notebook or a unit test needs no cluster."""
    packages = ["deployments.tutoring." + p.stem for p in _modules("deployments/tutoring")]
    packages += ["deployments.lifecycle." + p.stem for p in _modules("deployments/lifecycle")]
    packages += ["deployments.security." + p.stem for p in _modules("deployments/security")]
    packages += [
        "deployments.config",
        "deployments.schemas",
        "deployments.errors",
    ]
    packages += [
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in _modules("models")
        if p.stem != "__init__"
    ]
    code = "import importlib, sys\n"
    code += "".join(f"importlib.import_module({name!r})\n" for name in packages)
    code += "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


@pytest.mark.parametrize("folder", ["models", "store", "deployments", "pipelines", "benchmarks"])
def test_no_module_is_past_the_size_a_reader_can_hold(folder):
    long = {
        _relative(p): n
        for p in _modules(folder)
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
