"""A local Citus cluster for ``ragkeep db start --citus-workers N`` (docs/citus-notes.md).

A coordinator and N workers, each a standalone server of :mod:`.server` from the same wheel
bundle, on 127.0.0.1: the coordinator in the data folder ``D``, worker *i* in ``D.worker<i>`` next
to it (its own port, password file, state file and log). ``D.citus.json`` lists the workers, so
``db stop`` and ``db status`` find them. Citus is not in the wheel: ``build-citus.sh`` (the
project's ``../shared/tools``) compiles it into the bundle; without it this module refuses with
that command.

Between nodes Citus connects as the session's role (``ragkeep``) over TCP, and every node keeps
scram-sha-256 for it: the workers get the coordinator's password, and the coordinator's
``pg_dist_authinfo`` (readable by superusers only; Citus copies it to the workers with the
metadata) gives that password for every node (nodeid 0). No trust on TCP, no ``.pgpass`` in
the system user's home.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ragkeep.db import pgctl
from ragkeep.db.server import (
    DEFAULT_LISTEN,
    DEFAULT_PORT,
    ServerError,
    ServerInfo,
    read_server,
    start_server,
    stop_server,
)

log = logging.getLogger(__name__)

__all__ = ["BUILD_COMMAND", "CitusError", "Cluster", "Node", "citus_built", "cluster_file", "create_database",
           "list_nodes", "read_cluster", "start_cluster", "stop_cluster", "worker_dir"]

#: How to get citus.so into the bundle, from the project's root.
BUILD_COMMAND = "../shared/tools/build-citus.sh"
#: Citus must be the first library in shared_preload_libraries.
CITUS_PRELOAD = f"citus,{pgctl.PRELOAD}"
#: Nodes talk to each other on loopback only: the cluster is for trying Citus on one machine.
NODE_HOST = "127.0.0.1"


class CitusError(ServerError):
    """Citus is missing or the cluster cannot be set up; the message says what to do."""


@dataclass(frozen=True)
class Node:
    """A row of ``pg_dist_node`` on the coordinator."""

    nodeid: int
    host: str
    port: int
    role: str  # 'coordinator' (group 0) or 'worker'
    active: bool


@dataclass(frozen=True)
class Cluster:
    coordinator: ServerInfo
    workers: tuple[ServerInfo, ...]

    @property
    def servers(self) -> tuple[ServerInfo, ...]:
        return (self.coordinator, *self.workers)


def citus_library() -> Path:
    """Where ``citus.so`` must be: the bundle's pkglibdir (``pginstall/lib``)."""
    return Path(pgctl.BIN).parent / "lib" / "citus.so"


def citus_built() -> bool:
    return citus_library().exists() and (Path(pgctl.BIN).parent / "share" / "extension" / "citus.control").exists()


def require_citus() -> None:
    if not citus_built():
        raise CitusError(
            f"Citus is not built into the embedded PostgreSQL bundle ({citus_library()} is missing): "
            f"run {BUILD_COMMAND} from the project's root (builds Citus into .venv, ~90 s)"
        )


def worker_dir(data_dir: Path, number: int) -> Path:
    """Worker ``number`` (from 1) of the coordinator in ``data_dir``: ``D.worker<number>``."""
    return data_dir.parent / f"{data_dir.name}.worker{number}"


def cluster_file(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}.citus.json"


def _worker_count(data_dir: Path) -> int:
    try:
        return int(json.loads(cluster_file(data_dir).read_text())["workers"])
    except FileNotFoundError:
        return 0


def read_cluster(data_dir: Path) -> Cluster | None:
    """The cluster whose coordinator is in ``data_dir``; None for a plain server (or none)."""
    data_dir = data_dir.expanduser().resolve()
    count = _worker_count(data_dir)
    if not count:
        return None
    return Cluster(read_server(data_dir), tuple(read_server(worker_dir(data_dir, i)) for i in range(1, count + 1)))


def _node_url(info: ServerInfo, database: str | None = None) -> str:
    """As the ragkeep role over TCP, as ragkeep itself connects: Citus opens its connections to the
    other nodes as the session's role, and pg_dist_authinfo has that role's password."""
    return info.url if database is None else make_conninfo(info.url, dbname=database)


def _create_extension(info: ServerInfo, database: str | None = None) -> None:
    with psycopg.connect(_node_url(info, database), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS citus")


def _coordinator_host(info: ServerInfo) -> str:
    host = info.host
    return NODE_HOST if host.startswith("[") else host


def _set_password(info: ServerInfo, user: str, password: str, database: str | None = None) -> None:
    """The password Citus gives when this node connects to any node (nodeid 0) as ``user``.
    Every node needs its own row: Citus does not copy pg_dist_authinfo with the metadata."""
    # libpq's key=value syntax: the value quoted, its quotes and backslashes escaped.
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    with psycopg.connect(_node_url(info, database), autocommit=True) as conn, conn.transaction():
        conn.execute("DELETE FROM pg_dist_authinfo WHERE nodeid = 0 AND rolename = %s", (user,))
        conn.execute("INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) VALUES (0, %s, %s)",
                     (user, f"password='{escaped}'"))


def _join(cluster: Cluster, database: str | None = None) -> None:
    """The authentication between nodes, the coordinator's own entry, and every worker: each step
    is idempotent (a node already there keeps its id). Citus metadata is per database."""
    coordinator = cluster.coordinator
    for info in cluster.servers:
        _set_password(info, coordinator.user, coordinator.password, database)
    with psycopg.connect(_node_url(coordinator, database), autocommit=True) as conn:
        conn.execute("SELECT citus_set_coordinator_host(%s, %s)", (_coordinator_host(coordinator), coordinator.port))
        for worker in cluster.workers:
            try:
                conn.execute("SELECT citus_add_node(%s, %s)", (NODE_HOST, worker.port))
            except psycopg.Error as e:
                raise CitusError(f"the coordinator could not add the worker {worker.data_dir} "
                                 f"({NODE_HOST}:{worker.port}): {str(e).strip()}") from None


def start_cluster(
    data_dir: Path,
    workers: int,
    *,
    port: int | None = None,
    listen: str | None = None,
    password: str | None = None,
    shared_buffers: str = "512MB",
    default_port: int = DEFAULT_PORT,
    default_listen: str = DEFAULT_LISTEN,
) -> Cluster:
    """Start (initialising what is new) the coordinator in ``data_dir`` and ``workers`` workers
    next to it, and make them one Citus cluster in the ragkeep database. Again on a running cluster:
    a no-op that re-checks the nodes; more workers than before adds the new ones; fewer is refused
    (a worker's shards would be lost)."""
    require_citus()
    data_dir = data_dir.expanduser().resolve()
    if workers < 1:
        raise CitusError("a Citus cluster needs at least one worker")
    before = _worker_count(data_dir)
    if workers < before:
        raise CitusError(f"{data_dir} is a cluster of {before} workers: removing workers (and their shards) "
                         f"is not supported; give --citus-workers {before} or more")
    if not before:
        try:
            existing: ServerInfo | None = read_server(data_dir)
        except ServerError:
            existing = None
        if existing is not None and existing.standby:
            raise CitusError(f"{data_dir} is a hot standby: it cannot be a Citus coordinator")
        if existing is not None and existing.running and "citus" not in existing.preload.split(","):
            raise CitusError(f"the server in {data_dir} runs without Citus: stop it ('ragkeep db stop') first")
    coordinator = start_server(
        data_dir, port=port, listen=listen, password=password, shared_buffers=shared_buffers,
        default_port=default_port, default_listen=default_listen, preload=CITUS_PRELOAD,
    )
    started = [coordinator]
    try:
        nodes = []
        for number in range(1, workers + 1):
            # A worker's port: its own from before, else a free one; its password: the coordinator's.
            node = start_server(worker_dir(data_dir, number), port=0, listen=NODE_HOST, password=coordinator.password,
                                shared_buffers=shared_buffers, preload=CITUS_PRELOAD)
            started.append(node)
            nodes.append(node)
        cluster_file(data_dir).write_text(json.dumps({"workers": workers}, indent=2) + "\n")
        cluster = Cluster(coordinator, tuple(nodes))
        for info in cluster.servers:
            _create_extension(info)
        _join(cluster)
    except BaseException:
        for info in reversed(started):
            if info.started:
                stop_server(info.data_dir)
        raise
    return cluster


def create_database(cluster: Cluster, name: str) -> str:
    """A new database ``name`` on every node of the running ``cluster``, with the citus extension
    and the nodes joined in it (Citus' metadata is per database); its URL on the coordinator.
    For tests and trials that want a database of their own next to ``ragkeep``."""
    for info in cluster.servers:
        with psycopg.connect(_node_url(info), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        _create_extension(info, name)
    _join(cluster, name)
    return _node_url(cluster.coordinator, name)


def stop_cluster(data_dir: Path) -> list[Path]:
    """Fast shutdown of the coordinator in ``data_dir`` and its workers (a plain server: just it);
    the folders that were running."""
    data_dir = data_dir.expanduser().resolve()
    folders = [data_dir, *(worker_dir(data_dir, i) for i in range(1, _worker_count(data_dir) + 1))]
    return [folder for folder in folders if stop_server(folder)]


def list_nodes(coordinator: ServerInfo) -> list[Node]:
    """The nodes as the running coordinator knows them (``pg_dist_node``), coordinator first."""
    with psycopg.connect(_node_url(coordinator), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nodeid, nodename, nodeport, groupid = 0, isactive FROM pg_dist_node ORDER BY groupid, nodeid"
        ).fetchall()
    return [Node(int(r[0]), str(r[1]), int(r[2]), "coordinator" if r[3] else "worker", bool(r[4])) for r in rows]
