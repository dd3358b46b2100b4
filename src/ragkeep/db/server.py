"""The standalone PostgreSQL of ``ragkeep db start`` and ``ragkeep db replica`` (docs/scaling.md).

The wheel's server again (:mod:`.pgctl`), but one that outlives the command and is shared by any
number of ``ragkeep serve`` processes through ``RAGKEEP_DATABASE_URL``: it listens on TCP with
scram-sha-256 password authentication for the ``ragkeep`` role (the Unix socket keeps trust, as
in the embedded default), and is ready for streaming replication. A replica is a
``pg_basebackup`` of a primary, started as a hot standby with the same settings.

Next to the data folder ``D``: ``D.password`` (0600, the role's password), ``D.server.json``
(the port and listen address it runs with, the role, whether it is a standby) and ``D.log``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

import fasteners
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ragkeep.db import pgctl
from ragkeep.db.pgctl import EmbeddedPostgresError

log = logging.getLogger(__name__)

__all__ = ["EmbeddedPostgresError", "ServerError", "ServerInfo", "create_replica", "read_server", "start_server",
           "stop_server"]

DEFAULT_PORT = 5433  # next to a system PostgreSQL's 5432
DEFAULT_LISTEN = "127.0.0.1"
ROLE = "ragkeep"
DATABASE = "ragkeep"
#: What streaming replication needs beyond the defaults (wal_level=replica already is one).
REPLICATION_OPTIONS = ["-c max_wal_senders=10", "-c wal_keep_size=256MB", "-c hot_standby=on"]


class ServerError(EmbeddedPostgresError):
    """A ``db`` command cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class ServerInfo:
    """A standalone server as ``D.server.json`` and ``D.password`` describe it."""

    data_dir: Path
    port: int
    listen: str
    user: str
    password: str
    standby: bool
    running: bool = False
    #: True when this call started it (False: it was running already).
    started: bool = False
    #: shared_preload_libraries (a Citus node's starts with ``citus``), kept for later starts.
    preload: str = pgctl.PRELOAD

    @property
    def host(self) -> str:
        """Where clients connect: the first listen address (loopback for a wildcard)."""
        first = self.listen.split(",")[0].strip()
        if first in ("*", "0.0.0.0", ""):
            return "127.0.0.1"
        if first == "::":
            return "[::1]"
        return f"[{first}]" if ":" in first else first

    @property
    def url(self) -> str:
        user, password = quote(self.user, safe=""), quote(self.password, safe="")
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{DATABASE}"


def password_file(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}.password"


def state_file(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}.server.json"


def log_file(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}.log"


def _lock(data_dir: Path) -> fasteners.InterProcessLock:
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return fasteners.InterProcessLock(str(data_dir.parent / f".{data_dir.name}.lock"))


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only from the start."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def read_server(data_dir: Path) -> ServerInfo:
    """The server in ``data_dir`` as ``db start`` or ``db replica`` left it; ServerError if neither did."""
    data_dir = data_dir.expanduser().resolve()
    try:
        state = json.loads(state_file(data_dir).read_text())
        password = password_file(data_dir).read_text().strip()
    except FileNotFoundError:
        raise ServerError(
            f"no server made by 'ragkeep db start' or 'db replica' in {data_dir} ({state_file(data_dir)} is missing)"
        ) from None
    return ServerInfo(
        data_dir, int(state["port"]), str(state["listen"]), str(state["user"]), password, bool(state["standby"]),
        running=pgctl.running(data_dir), preload=str(state.get("preload", pgctl.PRELOAD)),
    )


def _save(info: ServerInfo) -> None:
    _write_private(password_file(info.data_dir), info.password + "\n")
    state = {k: v for k, v in asdict(info).items() if k in ("port", "listen", "user", "standby", "preload")}
    _write_private(state_file(info.data_dir), json.dumps(state, indent=2) + "\n")


def _hba_addresses(listen: str) -> list[str]:
    """Client addresses allowed over TCP: loopback for a loopback listener, everything for a
    wildcard, else the subnets the server is directly connected to (``samenet``)."""
    found: list[str] = []
    for address in (a.strip() for a in listen.split(",")):
        if address in ("127.0.0.1", "localhost", "::1"):
            found += ["127.0.0.1/32", "::1/128"]
        elif address in ("*", "0.0.0.0", "::"):
            found += ["0.0.0.0/0", "::/0"]
        else:
            found.append("samenet")
    return list(dict.fromkeys(found))


def _write_hba(data_dir: Path, listen: str, user: str) -> None:
    lines = [
        "# Written by ragkeep db start / db replica: rewritten at every start.",
        "local   all          all                 trust",
        "local   replication  all                 trust",
    ]
    for address in _hba_addresses(listen):
        lines.append(f"host    all          {user:<8}  {address:<16}  scram-sha-256")
        lines.append(f"host    replication  {user:<8}  {address:<16}  scram-sha-256")
    path = data_dir / "pg_hba.conf"
    path.write_text("\n".join(lines) + "\n")
    pgctl.give_to_system_user(path)
    path.chmod(0o600)


def _free_port(listen: str) -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1" if listen in ("127.0.0.1", "localhost") else "", 0))
        return int(s.getsockname()[1])


def _socket_url(data_dir: Path, port: int, database: str = "postgres") -> str:
    return f"postgresql://postgres@/{database}?host={pgctl.socket_dir_for(data_dir, port)}&port={port}"


def _launch(info: ServerInfo, shared_buffers: str) -> None:
    sock = pgctl.socket_dir_for(info.data_dir, info.port)
    options = [
        f"-c listen_addresses='{info.listen}'",
        f"-c port={info.port}",
        "-c password_encryption=scram-sha-256",
        *pgctl.common_options(sock, shared_buffers, info.preload),
        *REPLICATION_OPTIONS,
        # Citus moves shards with logical replication (citus_move_shard_placement).
        *(["-c wal_level=logical"] if "citus" in info.preload.split(",") else []),
    ]
    log.info("starting PostgreSQL in %s on %s:%s", info.data_dir, info.listen, info.port)
    pgctl.start(info.data_dir, sock, options, log_file(info.data_dir))


def _ensure_role(info: ServerInfo) -> None:
    """The login role (superuser: ragkeep's migrations create extensions; replication: standbys
    copy with it) with the password, and its database; over the Unix socket as ``postgres``."""
    with psycopg.connect(_socket_url(info.data_dir, info.port), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (info.user,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        # CREATE/ALTER ROLE take no parameters: the password goes in as a quoted literal.
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN SUPERUSER REPLICATION PASSWORD {}").format(
            sql.Identifier(info.user), sql.Literal(info.password)))
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            create = sql.SQL("CREATE DATABASE {} OWNER {}")
            conn.execute(create.format(sql.Identifier(DATABASE), sql.Identifier(info.user)))


def start_server(
    data_dir: Path,
    *,
    port: int | None = None,
    listen: str | None = None,
    password: str | None = None,
    shared_buffers: str = "512MB",
    default_port: int = DEFAULT_PORT,
    default_listen: str = DEFAULT_LISTEN,
    preload: str | None = None,
) -> ServerInfo:
    """Start the server in ``data_dir`` (initialised if new) unless it runs; return how to reach it.

    ``port``, ``listen``, ``password`` and ``preload`` given win; else what the folder last ran
    with; else the defaults (a new password is generated). Port 0 picks a free port, kept for later
    starts.
    A standby (from :func:`create_replica`) starts as one: its role and password are the primary's.
    """
    data_dir = data_dir.expanduser().resolve()
    with _lock(data_dir):
        try:
            stored: ServerInfo | None = read_server(data_dir)
        except ServerError:
            stored = None
        if pgctl.running(data_dir):
            if stored is None:
                raise ServerError(f"a PostgreSQL not started by 'ragkeep db start' runs in {data_dir}")
            return stored
        standby = (data_dir / "standby.signal").exists()
        if standby and stored is None:
            raise ServerError(f"{data_dir} is a standby without {state_file(data_dir).name}: make it with 'db replica'")
        if standby and password is not None and stored is not None and password != stored.password:
            raise ServerError("a standby's password is its primary's: change it there")
        chosen_listen = listen or (stored.listen if stored else default_listen)
        chosen_port = port if port is not None else (stored.port if stored else default_port)
        if chosen_port == 0:
            chosen_port = stored.port if stored else _free_port(chosen_listen)
        info = ServerInfo(
            data_dir, chosen_port, chosen_listen, stored.user if stored else ROLE,
            password or (stored.password if stored else secrets.token_urlsafe(24)), standby,
            running=True, started=True,
            preload=preload or (stored.preload if stored else pgctl.PRELOAD),
        )
        pgctl.prepare_folder(data_dir)
        if not (data_dir / "PG_VERSION").exists():
            log.info("initialising a new PostgreSQL data folder in %s", data_dir)
            pgctl.initdb(data_dir, ["--auth-local=trust", "--auth-host=scram-sha-256"])
        _write_hba(data_dir, info.listen, info.user)
        _save(info)
        _launch(info, shared_buffers)
        if not standby:
            _ensure_role(info)
        return info


def stop_server(data_dir: Path) -> bool:
    """Fast shutdown of the server in ``data_dir``; False when it was not running."""
    data_dir = data_dir.expanduser().resolve()
    with _lock(data_dir):
        if not pgctl.running(data_dir):
            return False
        pgctl.stop(data_dir)
        return True


def _check_primary(url: str, where: str) -> None:
    """Connect once, so that an unreachable primary or a wrong password is said plainly."""
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            row = conn.execute(
                "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except psycopg.OperationalError as e:
        message = str(e).strip()
        if "password authentication failed" in message:
            raise ServerError(f"wrong password for the primary at {where}: {message}") from None
        if "no password supplied" in message:
            raise ServerError(f"the primary at {where} wants a password: put it in the URL or PGPASSWORD") from None
        raise ServerError(f"cannot reach the primary at {where}: {message}") from None
    if not row or not row[0]:
        raise ServerError(f"the role in the URL may not replicate from {where} (it needs REPLICATION)")


_PROGRESS = re.compile(rb"[\r\n]+")


def _basebackup(data_dir: Path, params: dict[str, str], password: str, progress: Callable[[str], None]) -> None:
    """``pg_basebackup -R -X stream`` as the system user; the password goes in the environment
    (PGPASSWORD), never on a command line that ``ps`` shows."""
    args = [str(pgctl.BIN / "pg_basebackup"), "-D", str(data_dir), "-R", "-X", "stream", "--checkpoint=fast",
            "-P", "-w", "-h", params.get("host") or "localhost", "-p", params.get("port") or "5432",
            "-U", params["user"]]
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
    lines: list[str] = []
    user = pgctl.run_user()
    with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, user=user) as proc:
        if proc.stderr is None:
            raise ServerError("pg_basebackup: no stderr")  # cannot happen: stderr=PIPE
        buffer = b""
        while chunk := os.read(proc.stderr.fileno(), 4096):
            parts = _PROGRESS.split(buffer + chunk)
            buffer = parts.pop()
            for part in parts:
                if line := part.decode(errors="replace").strip():
                    lines.append(line)
                    progress(line)
        code = proc.wait()
    if code != 0:
        tail = "\n".join([*lines[-10:], buffer.decode(errors="replace")])
        raise ServerError(f"pg_basebackup failed (exit {code}):\n{tail.strip()}")


def create_replica(
    primary_url: str,
    data_dir: Path,
    *,
    port: int | None = 0,
    listen: str | None = None,
    shared_buffers: str = "512MB",
    progress: Callable[[str], None] | None = None,
) -> ServerInfo:
    """A hot standby of ``primary_url`` in the new or empty ``data_dir``, started; port 0 picks a
    free one. The URL's password (or ``$PGPASSWORD``) is kept next to the folder like a primary's.
    Refuses a folder that holds anything (nothing is ever overwritten)."""
    data_dir = data_dir.expanduser().resolve()
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise ServerError(f"{data_dir} is not empty: refusing to overwrite it (give a new or empty folder)")
    params = {k: str(v) for k, v in conninfo_to_dict(primary_url).items()}
    params.setdefault("user", ROLE)
    password = params.get("password") or os.environ.get("PGPASSWORD") or ""
    where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    _check_primary(primary_url, where)  # libpq reads $PGPASSWORD itself when the URL has none
    with _lock(data_dir):
        pgctl.prepare_folder(data_dir)
        try:
            _basebackup(data_dir, params, password, progress or (lambda line: None))
        except BaseException:
            shutil.rmtree(data_dir, ignore_errors=True)  # it was empty or absent: leave it so
            raise
        for stale in data_dir.glob(".s.PGSQL.*"):  # the primary's socket lock files, copied
            stale.unlink()
        info = ServerInfo(data_dir, port if port is not None else 0, listen or DEFAULT_LISTEN, params["user"], password,
                          standby=True)
        if info.port == 0:
            info = ServerInfo(data_dir, _free_port(info.listen), info.listen, info.user, password, standby=True)
        _save(info)
    return start_server(data_dir, shared_buffers=shared_buffers)
