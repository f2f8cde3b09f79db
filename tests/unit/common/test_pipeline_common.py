"""The pipelines' shared rules: a model is registered only under a commit that holds its code."""

import pytest

from pipelines import common


def test_a_dirty_tree_cannot_register_unless_allowed(monkeypatch):
    monkeypatch.setattr(common, "code_version", lambda: "abc1234-dirty")
    with pytest.raises(common.DirtyTreeError, match="commit them before registering"):
        common.committed_code_version()
    assert common.committed_code_version(allow_dirty=True) == "abc1234-dirty"


def test_a_clean_tree_registers_under_its_commit(monkeypatch):
    monkeypatch.setattr(common, "code_version", lambda: "abc1234")
    assert common.committed_code_version() == "abc1234"
