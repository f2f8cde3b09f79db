"""Fixtures the integration modules share."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def ray_dir():
    """Ray's temp dir of the module's own (short: it holds unix sockets), so logs and metric
    targets found there are this module's, whatever else runs Ray on the machine."""
    path = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
