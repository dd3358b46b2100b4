"""``ragkeep stats`` against a real server (typer's CliRunner)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner, Result

from ragkeep.cli.main import app
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, register, wait_for

runner = CliRunner()


def run(args: list[str], home: Path, base_url: str, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> Result:
    environ: dict[str, str | None] = {k: None for k in os.environ if k.startswith("RAGKEEP_")}
    environ.update({"RAGKEEP_HOME": str(home), "COLUMNS": "250"})
    return runner.invoke(app, [*args, "--base-url", base_url, "--email", email, "--password", password], env=environ)


def test_stats_tables_and_json(metrics_base_url: str, tmp_path: Path) -> None:
    user = register(metrics_base_url, "clistats")
    assert user.client.post("/v3/documents", data={"raw_text": "Cats sleep a lot. " * 30}).status_code == 201
    assert user.client.post("/v3/retrieval/search", json={"query": "cats"}).status_code == 200

    def listed() -> Result | None:
        result = run(["stats", "--top", "100"], tmp_path, metrics_base_url)
        assert result.exit_code == 0, result.output
        return result if user.email in result.stdout else None

    result = wait_for(listed)
    for title in ("query latency per user", "searches by plan", "requests per route", "active users per day",
                  "cache hit rates", "instances", "storage", "documents and chunks per user", "peak hour (UTC)"):
        assert title in result.stdout, title
    line = next(x for x in result.stdout.splitlines() if user.email in x and "│" in x)
    assert "1" in line.split("│")[2]  # one search

    as_json = run(["stats", "--json", "-w", "2"], tmp_path, metrics_base_url)
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["window_hours"] == 2


def test_user_stats_for_self_and_refusals(metrics_base_url: str, tmp_path: Path) -> None:
    me, other = register(metrics_base_url, "cliself"), register(metrics_base_url, "cliother")
    result = run(["stats", "--user", str(me.id)], tmp_path, metrics_base_url, me.email, me.password)
    assert result.exit_code == 0, result.output
    assert me.email in result.stdout and "per day (UTC)" in result.stdout
    refused = run(["stats", "--user", str(other.id)], tmp_path, metrics_base_url, me.email, me.password)
    assert refused.exit_code == 1 and "HTTP 403" in refused.stderr
    not_superuser = run(["stats"], tmp_path, metrics_base_url, me.email, me.password)
    assert not_superuser.exit_code == 1 and "HTTP 403" in not_superuser.stderr
    bad = run(["stats", "--user", "not-a-uuid"], tmp_path, metrics_base_url)
    assert bad.exit_code == 2 and "HTTP 422" in bad.stderr
