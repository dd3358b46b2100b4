"""Test utilities: a real ragkeep server on a free port, a server on a database of its own, and
helpers to make users.

Nothing here fakes the database or the model: the server runs the product code against the
embedded PostgreSQL started for the test session. Submodules hold the harnesses of the fault
tests and benchmarks: ``outage`` (a server process whose PostgreSQL is stopped or killed),
``replicas`` (``ragkeep serve`` processes on one database), ``hostile`` (hostile requests),
``cluster`` (a whole deployment: ``ragkeep db start`` primary, ``db replica`` standby, ``ragkeep
serve`` replicas and HAProxy, for tests/cluster/ and bench/cluster.py), ``system`` (tools such as
HAProxy that a test needs: skip, or fail under CI).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import psycopg
import uvicorn
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ragkeep.api.app import create_app
from ragkeep.config import Settings
from ragkeep.db.database import prepare_schema

ADMIN_EMAIL = "admin@ragkeep.test"
ADMIN_PASSWORD = "admin-password-for-tests"


T = TypeVar("T")


def wait_for(check: Callable[[], T], what: str = "the condition", timeout: float = 60.0, every: float = 0.05) -> T:
    """Poll ``check`` every ``every`` seconds until it returns something truthy, and return that;
    AssertionError naming ``what`` after ``timeout`` seconds (benchmarks use it too). For what is
    asynchronous by design (flushes, replication, health checks): a deadline, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_settings(home: Path, database_url: str | None, **sections: dict) -> Settings:
    data: dict = {
        "app": {"home": str(home)},
        "database": {"url": database_url, "pool_min_size": 1, "pool_max_size": 8},
        "auth": {"admin_email": ADMIN_EMAIL, "admin_password": ADMIN_PASSWORD},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return Settings.model_validate(data)


def create_database(pg_url: str, prefix: str) -> str:
    """An empty database on the session's server (no schema: the server that opens it migrates)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(pg_url, dbname=name)


def drop_database(pg_url: str, url: str) -> None:
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))


@contextmanager
def own_database(pg_url: str, prefix: str) -> Iterator[str]:
    """An empty database of its own on the session's server, dropped (sessions and all) afterwards."""
    url = create_database(pg_url, prefix)
    try:
        yield url
    finally:
        drop_database(pg_url, url)


@contextmanager
def own_server(pg_url: str, home: Path, prefix: str, **sections: dict) -> Iterator[ServerThread]:
    """A server on a database of its own: for tests whose figures are about the whole database
    (metrics, VACUUM, throttling), which other tests' rows would move. ``sections`` as for
    ``make_settings``; the database is ``server.database_url`` (a second replica may join it)."""
    with own_database(pg_url, prefix) as url, ServerThread(make_settings(home, url, **sections)) as server:
        yield server


@contextmanager
def fresh_database(pg_url: str, dimension: int, model: str) -> Iterator[str]:
    """A migrated database of its own, dropped afterwards: for tests whose answer depends on
    everything in the database (advice, promotion)."""
    with own_database(pg_url, "t") as url:
        prepare_schema(url, dimension, model)
        yield url


class ServerThread:
    """uvicorn serving ``create_app(settings)`` in a thread, on 127.0.0.1 and a free port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.base_url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the test server failed to start; see the log above")
            if time.monotonic() > deadline:
                raise TimeoutError("the test server did not start in time")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def database_url(self) -> str:
        return str(self.settings.database.url)

    @property
    def services(self):  # type: ignore[no-untyped-def]
        return self.app.state.services


@dataclass
class TestUser:
    id: uuid.UUID
    email: str
    password: str
    client: httpx.Client


def login(base_url: str, email: str, password: str) -> httpx.Client:
    resp = httpx.post(f"{base_url}/v3/users/login", data={"username": email, "password": password})
    resp.raise_for_status()
    token = resp.json()["results"]["access_token"]["token"]
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=120)


def register(base_url: str, prefix: str = "user") -> TestUser:
    email = f"{prefix}-{uuid.uuid4().hex[:10]}@ragkeep.test"
    password = f"pw-{uuid.uuid4().hex}"
    resp = httpx.post(f"{base_url}/v3/users", json={"email": email, "password": password})
    resp.raise_for_status()
    client = login(base_url, email, password)
    return TestUser(uuid.UUID(resp.json()["results"]["id"]), email, password, client)
