"""``ragkeep vacuum`` and ``ragkeep status`` against a real server (typer's CliRunner)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner, Result

from ragkeep.cli.main import app
from tests.maintenance.helpers import delete_chunks, seed_chunks
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, register

runner = CliRunner()


def run(args: list[str], home: Path, base_url: str, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> Result:
    environ: dict[str, str | None] = {k: None for k in os.environ if k.startswith("RAGKEEP_")}
    environ.update({"RAGKEEP_HOME": str(home), "COLUMNS": "250"})
    return runner.invoke(app, [*args, "--base-url", base_url, "--email", email, "--password", password], env=environ)


def test_vacuum_prints_what_each_table_gained(maint_base_url: str, maint_url: str, tmp_path: Path) -> None:
    user = register(maint_base_url, "clivac")
    seed_chunks(maint_url, user.id, 300)
    deleted = delete_chunks(maint_url, user.id, 3)

    result = run(["vacuum", "--table", "chunks", "--table", "documents"], tmp_path, maint_base_url)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "VACUUM ANALYZE" in result.stdout
    chunks = next(line for line in lines if line.lstrip("│ ").startswith("chunks"))
    assert "done" in chunks and str(deleted) in chunks.split()
    summary = lines[-1]
    assert "succeeded" in summary and "dead tuples removed" in summary
    assert int(summary.split(": ")[1].split()[0]) >= deleted


def test_vacuum_json_with_reindex_and_no_analyze(maint_base_url: str, tmp_path: Path) -> None:
    result = run(["vacuum", "-t", "chunks", "--no-analyze", "--reindex", "--json"], tmp_path, maint_base_url)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["run"]["status"] == "succeeded"
    assert out["run"]["options"] == {"analyze": False, "full": False, "reindex": True}
    # No vector index here: the reindex run records that there was nothing to rebuild.
    assert [c["task"] for c in out["reindex_runs"]] == ["reindex"] and out["reindex_runs"][0]["items"] == []


def test_vacuum_of_an_unknown_table_exits_2(maint_base_url: str, tmp_path: Path) -> None:
    result = run(["vacuum", "--table", "nope"], tmp_path, maint_base_url)
    assert result.exit_code == 2
    assert "tables" in result.stderr and "'nope'" in result.stderr and "HTTP 422" in result.stderr


def test_vacuum_needs_a_superuser(maint_base_url: str, tmp_path: Path) -> None:
    user = register(maint_base_url, "clinot")
    result = run(["vacuum"], tmp_path, maint_base_url, user.email, user.password)
    assert result.exit_code == 1 and "HTTP 403" in result.stderr


def test_status(maint_base_url: str, tmp_path: Path) -> None:
    result = run(["status"], tmp_path, maint_base_url)
    assert result.exit_code == 0, result.output
    for words in ("PostgreSQL 18", "pgvector", "all-MiniLM-L6-v2", "none (manual only)", "reindex advice"):
        assert words in result.stdout, words
    as_json = run(["status", "--json"], tmp_path, maint_base_url)
    assert json.loads(as_json.stdout)["embedding"]["dimension"] == 384
