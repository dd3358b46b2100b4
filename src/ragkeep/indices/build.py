"""Building and dropping vector indexes: the DDL, from a validated spec, on a dedicated connection.

``CREATE INDEX CONCURRENTLY`` cannot run inside a transaction block, so builds use their own
autocommit connection rather than one from the request pool, and run in the background: the
index shows as ``building`` in the catalog until it is valid.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import psycopg
from psycopg import sql

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


class IndexSpecError(ValueError):
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
        name = self.name
        if name is None:
            stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
            name = f"ix_{OPCLASSES[self.measure]}_{self.method}__{self.column}_{stamp}"
        if not NAME.match(name):
            raise IndexSpecError("index_name: lower-case letters, digits and _, at most 63, not starting with a digit")
        return IndexSpec(self.method, self.measure, self.table, self.column, name, args, self.concurrently)

    def ddl(self) -> sql.Composed:
        assert self.name is not None, "validate first"
        with_args = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier("lists" if k == "n_lists" else k), sql.Literal(int(v)))
            for k, v in sorted(self.arguments.items())
        )
        return sql.SQL("CREATE INDEX {conc} {name} ON {table} USING {method} ({column} {opclass}) WITH ({args})").format(
            conc=sql.SQL("CONCURRENTLY") if self.concurrently else sql.SQL(""),
            name=sql.Identifier(self.name),
            table=sql.Identifier(self.table),
            method=sql.SQL(self.method),  # a Literal type above: hnsw or ivfflat
            column=sql.Identifier(self.column),
            opclass=sql.Identifier(OPCLASSES[self.measure]),
            args=with_args,
        )


class IndexBuilder:
    """Runs builds in the background and keeps their outcome for this process's log."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, spec: IndexSpec, visible_within: float = 10.0) -> None:
        """Start the build and return once the index is in the catalog (as ``building``), so a
        GET right after the POST finds it. A build that fails is logged, and CONCURRENTLY leaves the
        failed index behind as ``invalid`` in the catalog, to be dropped."""
        task = asyncio.create_task(self._build(spec), name=f"index {spec.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + visible_within
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            while not task.done() and loop.time() < deadline:
                cur = await conn.execute("SELECT 1 FROM pg_class WHERE relname = %s", (spec.name,))
                if await cur.fetchone():
                    return
                await asyncio.sleep(0.02)

    async def _build(self, spec: IndexSpec) -> None:
        log.info("building index %s", spec.name)
        try:
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                await conn.execute(spec.ddl())
            log.info("index %s is built", spec.name)
        except psycopg.Error as e:
            # CONCURRENTLY leaves an INVALID index behind on failure; the catalog shows it as such.
            log.error("building index %s failed: %s; drop it with DELETE /v3/indices/%s/%s", spec.name, e,
                      spec.table, spec.name)

    async def drain(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def drop_index(url: str, name: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
