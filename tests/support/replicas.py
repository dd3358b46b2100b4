"""Helpers for the ingestion fault tests: real ``ragkeep serve`` processes on one database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ragkeep.config import IngestionConfig
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, free_port


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/v3/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def write_config(path: Path, url: str, ingestion: dict[str, Any]) -> None:
    # Settings this version does not know are left out, so the test also runs (and fails for
    # the behaviour, not the configuration) on code from before them.
    known = {k: v for k, v in ingestion.items() if k in IngestionConfig.model_fields}
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in known.items())
    path.write_text(
        f"""
[app]
log_level = "info"

[database]
url = {json.dumps(url)}
pool_min_size = 1
pool_max_size = 4

[embedding]
threads = 1

[ingestion]
{lines}

[auth]
admin_email = "{ADMIN_EMAIL}"
admin_password = "{ADMIN_PASSWORD}"
""",
        encoding="utf-8",
    )


@contextmanager
def serve_processes(
    tmp_path: Path, count: int, argv: Callable[[int], list[str]], env: dict[str, str] | None = None
) -> Iterator[list[Replica]]:
    """``count`` server processes, each started with ``argv(port)`` and a home of its own, healthy
    before this yields; stopped with SIGINT (or killed) after."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAGKEEP_")}
    base.update(COLUMNS="500", PYTHONUNBUFFERED="1", **(env or {}))
    started: list[Replica] = []
    try:
        for n in range(count):
            home = tmp_path / f"home{n}"
            home.mkdir()
            port = free_port()
            log = tmp_path / f"replica{n}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    argv(port), env={**base, "RAGKEEP_HOME": str(home)}, stdout=out, stderr=subprocess.STDOUT
                )
            started.append(Replica(process, port, log))
        deadline = time.monotonic() + 240
        while not all(r.healthy() for r in started):
            for r in started:
                if r.process.poll() is not None:
                    raise RuntimeError(f"replica on port {r.port} exited:\n{r.log.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError("the replicas did not start in time")
            time.sleep(0.2)
        yield started
    finally:
        for r in started:
            if r.process.poll() is None:
                r.process.send_signal(signal.SIGINT)
        for r in started:
            try:
                r.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                r.process.kill()
                r.process.wait()


@contextmanager
def replicas(url: str, tmp_path: Path, count: int, ingestion: dict[str, Any]) -> Iterator[list[Replica]]:
    """``count`` real ``ragkeep serve`` processes on the database ``url``; stopped (or reaped) after."""
    config = tmp_path / "ragkeep.toml"
    write_config(config, url, ingestion)

    def serve(port: int) -> list[str]:
        return [sys.executable, "-m", "ragkeep.cli.main", "serve", "--port", str(port), "--config", str(config)]

    with serve_processes(tmp_path, count, serve) as started:
        yield started
