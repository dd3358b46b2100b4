"""Readiness against real failures: the database stopped (503 naming it, liveness still 200, ready
again once it is back) and a schema older than the code (503 naming the versions)."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest

from ragkeep.db.migrate import latest_version
from ragkeep.db.server import start_server, stop_server
from tests.support import ServerThread, make_settings, own_server, wait_for

pytestmark = pytest.mark.db

def ready(base_url: str) -> httpx.Response:
    return httpx.get(f"{base_url}/v3/health/ready", timeout=10)


def test_ready_when_everything_is_up(base_url: str) -> None:
    r = ready(base_url)
    assert r.status_code == 200, r.text
    checks = r.json()["results"]["checks"]
    assert set(checks) == {"shutdown", "embedding_model", "database", "migrations"}
    assert set(checks.values()) == {"ok"}


def test_database_stopped_is_not_ready_but_alive_then_ready_again(tmp_path: Path) -> None:
    db = start_server(tmp_path / "pg", port=0, shared_buffers="32MB")
    try:
        with ServerThread(make_settings(tmp_path / "home", db.url)) as server:
            assert ready(server.base_url).status_code == 200
            stop_server(db.data_dir)
            r = ready(server.base_url)
            assert r.status_code == 503 and r.headers["Retry-After"] == "2", r.text
            assert r.json()["results"]["failed"] == ["database", "migrations"]
            assert "database" in r.json()["detail"]["message"]
            assert httpx.get(f"{server.base_url}/v3/health/live", timeout=10).status_code == 200
            start_server(db.data_dir)
            wait_for(lambda: ready(server.base_url).status_code == 200, "ready again after the database is back")
    finally:
        stop_server(db.data_dir)


def test_a_schema_older_than_the_code_is_not_ready(pg_url: str, tmp_path: Path) -> None:
    with own_server(pg_url, tmp_path, "ready") as server:
        url = server.settings.database.url
        assert url is not None and ready(server.base_url).status_code == 200
        latest = latest_version()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM schema_version WHERE version = %s", (latest,))
        r = ready(server.base_url)
        assert r.status_code == 503, r.text
        assert r.json()["results"]["failed"] == ["migrations"]
        assert f"expects {latest}" in r.json()["results"]["checks"]["migrations"]
