"""``ragkeep index``: create --wait, list, warm and drop against the real test server."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
from typer.testing import CliRunner, Result

from ragkeep.cli.main import app
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD

runner = CliRunner()


def run(args: list[str], home: Path, base_url: str) -> Result:
    environ: dict[str, str | None] = {k: None for k in os.environ if k.startswith("RAGKEEP_")}
    environ.update({"RAGKEEP_HOME": str(home), "COLUMNS": "250"})
    login = ["--base-url", base_url, "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD]
    return runner.invoke(app, args + login, env=environ)


def test_create_wait_list_warm_drop(base_url: str, make_user, settings, tmp_path: Path) -> None:
    user = make_user("ixcli")
    name = "ix_cli_test"
    try:
        r = run(["index", "create", "--method", "hnsw", "--measure", "l2_distance", "--m", "8",
                 "--ef-construction", "32", "--name", name, "--owner", str(user.id), "--wait"], tmp_path, base_url)
        assert r.exit_code == 0, r.output
        assert f"{name} is valid" in r.stdout and "maintenance_work_mem" in r.stderr
        r = run(["index", "list"], tmp_path, base_url)
        assert r.exit_code == 0, r.output
        line = next(line for line in r.stdout.splitlines() if name in line)
        assert "valid" in line and str(user.id) in line and "m=8" in line
        r = run(["index", "warm", "vectors", name], tmp_path, base_url)
        assert r.exit_code == 0, r.output
        assert f"{name} is warm" in r.stdout and "100% in shared buffers" in r.stdout
        r = run(["index", "drop", "vectors", name], tmp_path, base_url)
        assert r.exit_code == 0 and "dropped" in r.stdout, r.output
        r = run(["index", "drop", "vectors", name], tmp_path, base_url)
        assert r.exit_code == 1 and "HTTP 404" in r.stderr
    finally:
        with psycopg.connect(settings.database.url, autocommit=True) as conn:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
            conn.execute("DELETE FROM tenant_indexes WHERE index_name = %s", (name,))


def test_usage_errors_exit_2(base_url: str, tmp_path: Path) -> None:
    r = run(["index", "create", "--owner", "nope"], tmp_path, base_url)
    assert r.exit_code == 2 and "--owner: not a valid UUID" in r.stderr
    r = run(["index", "create", "--m", "1", "--wait"], tmp_path, base_url)
    assert r.exit_code == 2 and "index_arguments.m" in r.stderr


def test_a_failed_build_exits_1_with_the_reason(base_url: str, server, make_user, tmp_path: Path, settings) -> None:
    """An ivfflat build over more lists than memory allows fails; --wait says why."""
    from ragkeep.config import IndicesConfig
    from tests.indices.seed import seeded

    builder = server.services.indexes
    saved = builder.config
    builder.config = IndicesConfig(build_memory_cap_mb=64, prewarm=False)
    name = "ix_cli_fails"
    user = make_user("ixclifail")
    try:
        with seeded(settings.database.url, user.id, 300):
            r = run(["index", "create", "--method", "ivfflat", "--n-lists", "4000", "--name", name, "--wait"],
                    tmp_path, base_url)
        assert r.exit_code == 1, r.output
        assert "warning:" in r.stderr and f"building {name} failed" in r.stderr and "memory required" in r.stderr
    finally:
        builder.config = saved
        with psycopg.connect(settings.database.url, autocommit=True) as conn:
            conn.execute(f"DROP INDEX IF EXISTS {name}")


def test_advise_prints_the_servers_advice(base_url: str, admin, make_user, settings, tmp_path: Path) -> None:
    user = make_user("ixadvise")
    assert user.client.post("/v3/documents", data={"raw_text": "Glaciers carve valleys. " * 30}).status_code == 201
    assert user.client.post("/v3/retrieval/search", json={"query": "ice"}).status_code == 200
    assert user.client.get("/v3/indices/advice").status_code == 403
    r = admin.get("/v3/indices/advice")
    assert r.status_code == 200, r.text
    advice = r.json()["results"]
    with psycopg.connect(settings.database.url) as conn:
        total, mx = conn.execute("SELECT sum(chunk_count), max(chunk_count) FROM owner_stats").fetchone()
    assert advice["vectors"]["total"] == total and advice["vectors"]["per_user"]["max"] == mx
    assert advice["traffic"]["searches"] >= 1  # the route flushes this replica's activity first
    assert advice["recommendation"]["action"] in ("none", "partial", "global")
    r = run(["index", "advise"], tmp_path, base_url)
    assert r.exit_code == 0, r.output
    assert f"{total:,} vectors over" in r.stdout and f"recommendation: {advice['recommendation']['action']}" in r.stdout
    r = run(["index", "advise", "--json"], tmp_path, base_url)
    assert r.exit_code == 0 and '"exact_threshold": 2000' in r.stdout
