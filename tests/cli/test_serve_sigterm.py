"""``ragkeep serve`` stopped with SIGTERM while a request and a background upload are in flight:
both finish (200/201, ``success``), readiness answers 503 during the drain, the process exits 0."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.faults.test_ingest_crash import prose
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, login, own_database, wait_for
from tests.support.replicas import serve_processes, write_config

pytestmark = pytest.mark.db

def test_sigterm_finishes_requests_and_uploads_in_flight(pg_url: str, tmp_path: Path) -> None:
    with own_database(pg_url, "sigterm") as url:
        config = tmp_path / "ragkeep.toml"
        write_config(config, url, {"background_threshold_bytes": 60_000})
        shutdown = 'log_level = "info"\nshutdown_delay_seconds = 10\nshutdown_grace_seconds = 600'
        text = config.read_text().replace('log_level = "info"', shutdown)
        config.write_text(text)

        def serve(port: int) -> list[str]:
            return [sys.executable, "-m", "ragkeep.cli.main", "serve", "--port", str(port), "--config", str(config)]

        with serve_processes(tmp_path, 1, serve) as (server,):
            client = login(server.base_url, ADMIN_EMAIL, ADMIN_PASSWORD)
            r = client.post("/v3/documents", files={"file": ("big.txt", prose(7, 120_000), "text/plain")})
            assert r.status_code == 202, r.text
            background = r.json()["results"]["document_id"]
            answers: list[httpx.Response] = []
            synchronous = threading.Thread(target=lambda: answers.append(
                client.post("/v3/documents", files={"file": ("small.txt", prose(8, 50_000), "text/plain")})))
            synchronous.start()
            with psycopg.connect(url, autocommit=True) as conn:
                def in_flight() -> bool:
                    rows = conn.execute("SELECT ingestion_status FROM documents").fetchall()
                    return len(rows) == 2 and all(s not in ("success", "failed") for (s,) in rows)
                wait_for(in_flight, "both uploads in flight")

                server.process.send_signal(signal.SIGTERM)
                ready = httpx.get(f"{server.base_url}/v3/health/ready", timeout=30)
                assert ready.status_code == 503, ready.text
                assert ready.json()["results"]["failed"] == ["shutdown"]
                assert ready.headers["retry-after"]
                assert httpx.get(f"{server.base_url}/v3/health/live", timeout=30).status_code == 200

                synchronous.join(300)
                assert answers and answers[0].status_code in (200, 201), answers and answers[0].text
                assert server.process.wait(300) == 0, server.log.read_text()
                status, error = conn.execute(
                    "SELECT ingestion_status, error FROM documents WHERE id = %s", (background,)).fetchone()
            assert (status, error) == ("success", None)
            client.close()
