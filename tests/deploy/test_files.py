"""deploy/: the compose files and haproxy.cfg are valid for the tools that read them, and the
HAProxy configuration works for real in front of two ``ragkeep serve`` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, free_port, login, own_database, wait_for
from tests.support.replicas import serve_processes, write_config
from tests.support.system import require_tool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE_HINT = "apt-get install -y docker-compose"
HAPROXY_HINT = "apt-get install -y haproxy"


def compose_config(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    tool = require_tool("docker-compose", COMPOSE_HINT)
    return subprocess.run([tool, "-f", str(DEPLOY / name), "config"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def test_compose_yaml_is_valid() -> None:
    done = compose_config("compose.yaml", {"RAGKEEP_DB_PASSWORD": "pw", "RAGKEEP_ADMIN_PASSWORD": "pw"})
    assert done.returncode == 0, done.stderr
    assert "pgvector/pgvector:pg17" in done.stdout
    assert "/v3/health/ready" in done.stdout


def test_compose_swarm_yaml_is_valid_with_its_replica_count() -> None:
    done = compose_config("compose.swarm.yaml", {"RAGKEEP_ADMIN_PASSWORD": "pw", "RAGKEEP_REPLICAS": "5"})
    assert done.returncode == 0, done.stderr
    assert "replicas: 5" in done.stdout
    assert "order: start-first" in done.stdout
    for secret in ("ragkeep_db_password", "ragkeep_secret_key"):
        assert secret in done.stdout


def test_compose_refuses_a_missing_password() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAGKEEP_DB_PASSWORD", "RAGKEEP_ADMIN_PASSWORD")}
    tool = require_tool("docker-compose", COMPOSE_HINT)
    done = subprocess.run([tool, "-f", str(DEPLOY / "compose.yaml"), "config"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "RAGKEEP_DB_PASSWORD" in done.stderr


def haproxy_env(tmp_path: Path, bind: str, servers: list[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGKEEP_")}
    env.update(RAGKEEP_LB_BIND=bind, RAGKEEP_LB_ADMIN=str(tmp_path / "admin.sock"))
    env.update({f"RAGKEEP_R{n}": s for n, s in enumerate(servers, 1)})
    return env


@pytest.mark.parametrize("servers", [["127.0.0.1:1"], ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]])
def test_haproxy_cfg_is_valid(tmp_path: Path, servers: list[str]) -> None:
    tool = require_tool("haproxy", HAPROXY_HINT)
    done = subprocess.run([tool, "-c", "-f", str(DEPLOY / "haproxy.cfg")],
                          env=haproxy_env(tmp_path, "127.0.0.1:1", servers), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_haproxy_cfg_with_dns_discovery_is_valid(tmp_path: Path) -> None:
    tool = require_tool("haproxy", HAPROXY_HINT)
    env = haproxy_env(tmp_path, ":7272", []) | {"RAGKEEP_DISCOVER": "tasks.ragkeep:7272"}
    done = subprocess.run([tool, "-c", "-f", str(DEPLOY / "haproxy.cfg")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr

@pytest.fixture
def shared_db(pg_url: str) -> Iterator[str]:
    with own_database(pg_url, "deploy") as url:
        yield url


@pytest.mark.db
def test_haproxy_spreads_requests_and_takes_a_killed_replica_out(shared_db: str, tmp_path: Path) -> None:
    tool = require_tool("haproxy", HAPROXY_HINT)
    config = tmp_path / "ragkeep.toml"
    write_config(config, shared_db, {})

    def serve(port: int) -> list[str]:
        return [sys.executable, "-m", "ragkeep.cli.main", "serve", "--port", str(port), "--config", str(config)]

    with serve_processes(tmp_path, 2, serve) as (a, b):
        lb_port = free_port()
        env = haproxy_env(tmp_path, f"127.0.0.1:{lb_port}", [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])
        log = (tmp_path / "haproxy.log").open("wb")
        lb = subprocess.Popen([tool, "-db", "-f", str(DEPLOY / "haproxy.cfg")], env=env, stdout=log, stderr=log)
        base = f"http://127.0.0.1:{lb_port}"
        try:
            def replica_behind() -> str | None:
                try:
                    r = httpx.get(f"{base}/v3/health/ready", timeout=5)
                except httpx.HTTPError:
                    return None
                return r.json()["results"]["replica"] if r.status_code == 200 else None

            # Both replicas answer through the balancer (readiness names the process).
            seen: set[str] = set()
            wait_for(lambda: seen.add(replica_behind() or "") or len(seen - {""}) == 2, "both replicas behind HAProxy")

            client = login(base, ADMIN_EMAIL, ADMIN_PASSWORD)
            r = client.post("/v3/documents", files={"raw_text": (None, "the lighthouse keeper logs the tide")})
            assert r.status_code in (200, 201, 202), r.text

            a.process.send_signal(signal.SIGKILL)
            a.process.wait(30)
            # Every search answers 200: the one sent to the dead replica is retried on the other,
            # and the health checks take it out.
            for _ in range(20):
                r = client.post("/v3/retrieval/search", json={"query": "tide", "search_settings": {"limit": 3}})
                assert r.status_code == 200, r.text
            assert {replica_behind() for _ in range(5)} == {replica_name_of(b)}
            # The health checks mark it down (admin socket: the same one an operator drains with).
            wait_for(lambda: "r1 DOWN" in admin(tmp_path / "admin.sock", "show stat"), "r1 marked down")
            client.close()
        finally:
            lb.send_signal(signal.SIGTERM)
            lb.wait(30)
            log.close()


def admin(sock_path: Path, command: str) -> str:
    """One command on HAProxy's admin socket; ``show stat`` rows become "name STATUS" lines."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(sock_path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    text = b"".join(chunks).decode()
    if command != "show stat":
        return text
    rows = [line.split(",") for line in text.splitlines() if line and not line.startswith("#")]
    return "\n".join(f"{row[1]} {row[17]}" for row in rows if len(row) > 17)


def replica_name_of(replica) -> str:  # type: ignore[no-untyped-def]
    r = httpx.get(f"{replica.base_url}/v3/health/live", timeout=5)
    return str(r.json()["results"]["replica"])
