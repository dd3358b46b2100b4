"""Building and dropping vector indexes: the DDL, from a validated spec, on a dedicated connection.

``CREATE INDEX CONCURRENTLY`` cannot run inside a transaction block, so builds use their own
autocommit connection rather than one from the request pool, and run in the background: the
index shows as ``building`` in the catalog until it is valid. Each build session gets a
``maintenance_work_mem`` sized for its graph and parallel maintenance workers (``memory``), and
a successful build is warmed into shared buffers (``warm``). A spec with an ``owner_id`` builds a
partial index over that owner's rows ("tenant promotion") and registers it in ``tenant_indexes``,
where the search planner finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import psycopg
from psycopg import sql

from ragkeep.config import IndicesConfig
from ragkeep.errors import InvalidInput
from ragkeep.indices.catalog import build_arguments
from ragkeep.indices.leftovers import drop_leftovers
from ragkeep.indices.memory import BuildPlan, apply_plan, column_dimension, count_rows, plan_build
from ragkeep.indices.warm import Warmer

log = logging.getLogger(__name__)

Method = Literal["hnsw", "ivfflat"]
Measure = Literal["cosine_distance", "l2_distance", "max_inner_product", "l1_distance"]

#: pgvector operator classes for the ``vector`` type, by R2R's measure names.
OPCLASSES: dict[str, str] = {
    "cosine_distance": "vector_cosine_ops",
    "l2_distance": "vector_l2_ops",
    "max_inner_product": "vector_ip_ops",
    "l1_distance": "vector_l1_ops",
}
NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class IndexWatcher(Protocol):
    """Who must hear at once that this process built or dropped an index: the search planner
    (``ragkeep.search.planner.Planner``), which otherwise trusts what it knows for a few seconds."""

    def invalidate(self) -> None: ...


class IndexSpecError(InvalidInput, ValueError):
    """A spec that cannot be built; the message names the field."""


@dataclass(frozen=True)
class IndexSpec:
    method: Method
    measure: Measure
    table: str = "chunks"
    column: str = "embedding"
    name: str | None = None
    arguments: dict[str, int] = field(default_factory=dict)
    concurrently: bool = True
    #: Build a partial index over this owner's rows only (``WHERE owner_id = '<uuid>'``).
    owner_id: uuid.UUID | None = None

    def validated(self, now: datetime | None = None) -> IndexSpec:
        """Check the arguments (pgvector's bounds) and fill in R2R's default name."""
        args = dict(self.arguments)
        if self.method == "hnsw":
            unknown = set(args) - {"m", "ef_construction"}
            m, ef = args.setdefault("m", 16), args.setdefault("ef_construction", 64)
            if not 2 <= m <= 100:
                raise IndexSpecError("index_arguments.m: must be between 2 and 100")
            if ef < 2 * m or ef > 1000:
                raise IndexSpecError("index_arguments.ef_construction: must be at least 2 * m and at most 1000")
        else:
            unknown = set(args) - {"n_lists"}
            if self.measure == "l1_distance":
                raise IndexSpecError("index_measure: ivfflat does not support l1_distance; use hnsw")
            lists = args.setdefault("n_lists", 100)
            if not 1 <= lists <= 32768:
                raise IndexSpecError("index_arguments.n_lists: must be between 1 and 32768")
        if unknown:
            raise IndexSpecError(f"index_arguments: unknown for {self.method}: {', '.join(sorted(unknown))}")
        if self.column != "embedding":
            raise IndexSpecError("index_column: only 'embedding' holds vectors")
        # Typed callers pass a UUID; a caller from untyped code may pass its text.
        given: object = self.owner_id
        owner: uuid.UUID | None
        if given is None or isinstance(given, uuid.UUID):
            owner = given
        else:
            try:
                owner = uuid.UUID(str(given))
            except ValueError:
                raise IndexSpecError(f"filters.owner_id: not a valid UUID: {str(given)[:60]!r}") from None
        name = self.name
        if name is None:
            stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
            name = f"ix_{OPCLASSES[self.measure]}_{self.method}__{self.column}_{stamp}"
            if owner is not None:
                name += f"_{owner.hex[:8]}"
        if not NAME.match(name):
            raise IndexSpecError("index_name: lower-case letters, digits and _, at most 63, not starting with a digit")
        return IndexSpec(self.method, self.measure, self.table, self.column, name, args, self.concurrently, owner)

    def ddl(self) -> sql.Composed:
        if self.name is None:
            raise ValueError("validate the index spec first: it has no name yet")
        with_args = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier("lists" if k == "n_lists" else k), sql.Literal(int(v)))
            for k, v in sorted(self.arguments.items())
        )
        where: sql.Composable = sql.SQL("")
        if self.owner_id is not None:
            # A literal, not a parameter: a partial index's predicate is part of its definition.
            # The value went through uuid.UUID, and sql.Literal quotes it.
            where = sql.SQL(" WHERE owner_id = {}::uuid").format(sql.Literal(str(uuid.UUID(str(self.owner_id)))))
        return sql.SQL(
            "CREATE INDEX {conc} {name} ON {table} USING {method} ({column} {opclass}) WITH ({args}){where}"
        ).format(
            where=where,
            conc=sql.SQL("CONCURRENTLY") if self.concurrently else sql.SQL(""),
            name=sql.Identifier(self.name),
            table=sql.Identifier(self.table),
            method=sql.SQL(self.method),  # a Literal type above: hnsw or ivfflat
            column=sql.Identifier(self.column),
            opclass=sql.Identifier(OPCLASSES[self.measure]),
            args=with_args,
        )


@dataclass
class BuildRecord:
    """A build this process started: its plan (memory, workers, warning) and its outcome."""

    name: str
    table: str
    method: str
    owner_id: uuid.UUID | None
    plan: BuildPlan
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    state: Literal["building", "succeeded", "failed"] = "building"
    finished_at: datetime | None = None
    error: str | None = None
    #: PostgreSQL notices of the build, e.g. pgvector's "hnsw graph no longer fits ...".
    notices: list[str] = field(default_factory=list)
    kind: Literal["create", "reindex"] = "create"
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "state": self.state,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "notices": list(self.notices),
            **self.plan.as_dict(),
        }


class IndexBuilder:
    """Runs builds, rebuilds and warm-ups in the background and keeps their outcome for this
    process (``records``, ``warmer.states``); other code starts a build with ``await start(spec)``."""

    def __init__(self, url: str, config: IndicesConfig | None = None, planner: IndexWatcher | None = None) -> None:
        self.url = url
        self.config = config or IndicesConfig()
        #: The application's planner, told of each build and drop (None: nobody searches here).
        self.planner = planner
        self.records: dict[str, BuildRecord] = {}
        self.warmer = Warmer(url)
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def plan(self, spec: IndexSpec) -> BuildPlan:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            rows = await count_rows(conn, spec.table, spec.owner_id)
            dim = await column_dimension(conn, spec.table, spec.column)
        return plan_build(spec.method, spec.arguments, rows, dim, self.config)

    async def start(self, spec: IndexSpec, visible_within: float = 10.0) -> BuildRecord:
        """Plan the build, start it, and return once the index is in the catalog (as ``building``),
        so a GET right after the POST finds it; an owner's index is registered in tenant_indexes.
        A build that fails is logged and kept in ``records``; CONCURRENTLY leaves the failed index
        behind as ``invalid`` in the catalog, to be dropped (or repaired at the next start)."""
        if spec.name is None:
            raise ValueError("validate the index spec first: it has no name yet")
        record = BuildRecord(spec.name, spec.table, spec.method, spec.owner_id, await self.plan(spec))
        self.records[spec.name] = record
        self.warmer.forget(spec.name)
        task = record.task = self.spawn(self._build(spec, record), f"index {spec.name}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + visible_within
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            while True:
                cur = await conn.execute("SELECT 1 FROM pg_class WHERE relname = %s", (spec.name,))
                visible = await cur.fetchone() is not None
                if visible or task.done() or loop.time() > deadline:
                    break
                await asyncio.sleep(0.02)
            if spec.owner_id is not None and visible:
                await conn.execute(
                    "INSERT INTO tenant_indexes (index_name, owner_id, measure) VALUES (%s, %s, %s) "
                    "ON CONFLICT (index_name) DO UPDATE SET owner_id = excluded.owner_id, measure = excluded.measure",
                    (spec.name, spec.owner_id, spec.measure),
                )
        return record

    async def _build(self, spec: IndexSpec, record: BuildRecord) -> None:
        await self._run(record, spec.ddl())

    async def reindex(self, name: str, table: str, method: str, arguments: dict[str, int]) -> BuildRecord:
        """Rebuild an (invalid) index in place with REINDEX CONCURRENTLY, in the background."""
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            rows = await count_rows(conn, table)
            dim = await column_dimension(conn, table, "embedding")
        plan = plan_build(method, build_arguments(arguments), rows, dim, self.config)
        record = BuildRecord(name, table, method, None, plan, kind="reindex")
        self.records[name] = record
        ddl = sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(sql.Identifier(name))
        record.task = self.spawn(self._run(record, ddl), f"reindex {name}")
        return record

    async def _run(self, record: BuildRecord, ddl: sql.Composed) -> None:
        log.info(
            "building index %s (%s): %d rows, estimate %.0f MB, maintenance_work_mem %d MB, %d parallel workers",
            record.name, record.kind, record.plan.rows, record.plan.estimate_bytes / 2**20,
            record.plan.maintenance_work_mem_mb, record.plan.parallel_workers,
        )
        try:
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                conn.add_notice_handler(lambda d: record.notices.append(d.message_primary or ""))
                await apply_plan(conn, record.plan)
                try:
                    await conn.execute(ddl)
                except psycopg.Error:
                    if record.kind == "reindex":  # its <name>_ccnew copy must not stay behind
                        with contextlib.suppress(psycopg.Error):  # else the next start drops it
                            await drop_leftovers(conn, record.table)
                    raise
        except psycopg.Error as e:
            # CONCURRENTLY leaves an INVALID index behind on failure; the catalog shows it as such.
            record.state, record.error = "failed", str(e).strip()
            log.error("building index %s failed: %s; drop it with DELETE /v3/indices/%s/%s", record.name,
                      record.error, record.table, record.name)
            return
        finally:
            record.finished_at = datetime.now(UTC)
        record.state = "succeeded"
        for notice in record.notices:
            log.warning("index %s: %s", record.name, notice)
        log.info("index %s is built", record.name)
        self._changed()  # this process's searches use it from now; other replicas within seconds
        if self.config.prewarm:
            self.warmer.start(record.name)

    async def drop(self, name: str) -> None:
        """Drop the index (and its tenant_indexes entry); this process's searches stop planning on it."""
        await drop_index(self.url, name)
        self._changed()

    def _changed(self) -> None:
        if self.planner is not None:
            self.planner.invalidate()

    def forget(self, name: str) -> None:
        self.records.pop(name, None)
        self.warmer.forget(name)

    def describe(self, name: str) -> dict[str, Any]:
        """``build`` and ``warm`` of an index, as far as this process knows (else null)."""
        record, warm = self.records.get(name), self.warmer.states.get(name)
        return {"build": record.as_dict() if record else None, "warm": warm.as_dict() if warm else None}

    async def drain(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.warmer.drain()


async def drop_index(url: str, name: str) -> None:
    """Drop the index and its tenant_indexes entry (the planner must not pick a dropped index;
    :meth:`IndexBuilder.drop` also tells this process's planner)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
        await conn.execute("DELETE FROM tenant_indexes WHERE index_name = %s", (name,))
