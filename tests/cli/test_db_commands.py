"""``ragkeep db start|url|status|stop|replica`` as real processes: the server outlives the command."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ragkeep.db.server import stop_server

pytestmark = pytest.mark.db


def ragkeep(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "RAGKEEP_DATABASE__EMBEDDED_SHARED_BUFFERS": "32MB"}
    return subprocess.run([sys.executable, "-m", "ragkeep.cli.main", *args], capture_output=True, text=True,
                          timeout=180, env=env)


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for folder in reversed(made):
        stop_server(folder)


def test_start_url_status_replica_stop(tmp_path: Path, folders: list[Path]) -> None:
    primary, standby = tmp_path / "p", tmp_path / "s"
    folders += [primary, standby]
    started = ragkeep("db", "start", "-D", str(primary), "--port", "0")
    assert started.returncode == 0, started.stderr
    url = ragkeep("db", "url", "-D", str(primary)).stdout.strip()
    assert url.startswith("postgresql://ragkeep:") and url in started.stdout
    assert f"RAGKEEP_DATABASE_URL='{url}' ragkeep serve" in started.stdout
    with psycopg.connect(url) as conn:  # the command has exited; the server runs on
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    again = ragkeep("db", "start", "-D", str(primary))
    assert again.returncode == 0 and "already running" in again.stdout and url in again.stdout

    made = ragkeep("db", "replica", "--from", url, "-D", str(standby))
    assert made.returncode == 0, made.stderr
    standby_url = ragkeep("db", "url", "-D", str(standby)).stdout.strip()
    with psycopg.connect(standby_url) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    refused = ragkeep("db", "replica", "--from", url, "-D", str(standby))
    assert refused.returncode == 1 and "not empty" in refused.stderr

    for folder in (standby, primary):
        assert "stopped the server" in ragkeep("db", "stop", "-D", str(folder)).stdout
        status = ragkeep("db", "status", "-D", str(folder))
        assert status.returncode == 1 and "stopped" in status.stdout
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=3).close()


def test_url_of_a_folder_without_a_server_is_a_clear_error(tmp_path: Path) -> None:
    result = ragkeep("db", "url", "-D", str(tmp_path / "nothing"))
    assert result.returncode == 1 and "no server made by 'ragkeep db start'" in result.stderr
