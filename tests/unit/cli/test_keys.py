"""`tutor keys create|list|revoke` against a real SQLite store (typer's CliRunner)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from deployments.cli.main import app
from deployments.security.keys import KEY_PREFIX, hash_key
from store.sqlite_store import SQLiteStore

runner = CliRunner()


@pytest.fixture
def db(tmp_path):
    return tmp_path / "keys.db"


def _keys(db, *args: str):
    return runner.invoke(app, ["keys", *args, "--store-uri", f"sqlite:///{db}"])


def test_create_prints_the_key_once_as_the_last_line_and_stores_its_hash(db):
    result = _keys(db, "create", "--name", "web", "--scopes", "tutor,learners:read")
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert key.startswith(KEY_PREFIX)
    with SQLiteStore(db) as store:
        (record,) = store.list_api_keys()
    assert record.key_hash == hash_key(key)
    assert (record.name, record.scopes, record.tenant) == ("web", ["tutor", "learners:read"], None)
    assert (record.rpm, record.max_concurrent_turns) == (600, 8)
    assert key not in db.read_bytes().decode("latin-1")


def test_create_with_tenant_and_limits(db):
    args = ["create", "--name", "s1", "--scopes", "tutor", "--tenant", "school-1"]
    result = _keys(db, *args, "--rpm", "30", "--max-turns", "2")
    assert result.exit_code == 0, result.output
    with SQLiteStore(db) as store:
        (record,) = store.list_api_keys()
    assert (record.tenant, record.rpm, record.max_concurrent_turns) == ("school-1", 30, 2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scopes", "tutor,root"], "unknown scope 'root'"),
        (["--scopes", "tutor", "--tenant", "a/b"], "bad tenant"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(db, args, message):
    result = _keys(db, "create", "--name", "web", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_a_live_name_is_refused_and_free_again_after_revoke(db):
    assert _keys(db, "create", "--name", "web", "--scopes", "tutor").exit_code == 0
    again = _keys(db, "create", "--name", "web", "--scopes", "tutor")
    assert again.exit_code == 2 and "exists and is not revoked" in again.output
    revoked = _keys(db, "revoke", "web")
    assert revoked.exit_code == 0 and "revoked key 'web'" in revoked.output
    assert _keys(db, "revoke", "web").exit_code == 2  # no live key of that name now
    assert _keys(db, "create", "--name", "web", "--scopes", "tutor").exit_code == 0


def test_list_shows_names_scopes_limits_and_revocation_never_secrets(db):
    key = _keys(db, "create", "--name", "web", "--scopes", "tutor").output.strip().split()[-1]
    _keys(db, "create", "--name", "dash", "--scopes", "learners:read", "--tenant", "t1")
    _keys(db, "revoke", "web")
    table = _keys(db, "list")
    assert table.exit_code == 0
    assert "web" in table.output and "dash" in table.output and "t1" in table.output
    listed = json.loads(_keys(db, "list", "--json").output)
    assert [(k["name"], k["revoked_at"] is not None) for k in listed] == [
        ("web", True),
        ("dash", False),
    ]
    for output in (table.output, json.dumps(listed)):
        assert key not in output and hash_key(key) not in output


def test_the_store_defaults_to_tutor_store_uri(db):
    result = runner.invoke(
        app,
        ["keys", "create", "--name", "web", "--scopes", "tutor"],
        # a config without args.store_uri: the environment decides, as in build_app
        env={"TUTOR_STORE_URI": f"sqlite:///{db}"},
    )
    assert result.exit_code == 0, result.output
    with SQLiteStore(db) as store:
        assert [k.name for k in store.list_api_keys()] == ["web"]


def test_the_keys_command_never_imports_ray():
    code = (
        "import sys, deployments.cli.keys\n"
        "print(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
