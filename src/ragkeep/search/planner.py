"""Per search: how many vectors the caller's scope holds, and so how to search them.

Exact scans cost time linear in the scope (about a microsecond or two per vector) and return
every true neighbour; HNSW answers large scopes in milliseconds but, filtered to one tenant,
PostgreSQL's plain index plan comes back short or wrong. So: exact below a threshold, the owner's
own partial index where one exists, else the global index with an iterative scan. Scope sizes come
from ``owner_stats`` (kept exact by the store's writes; one primary-key lookup per search), not from counting
rows per query; which indexes exist comes from a directory refreshed every few seconds.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from ragkeep.config import SearchConfig
from ragkeep.search.queries import Strategy
from ragkeep.search.scope import Scope

_OWNER_KEYS = ("owner_id", "user_id")

#: How long the index directory is trusted. Builds and drops made by this process refresh it at
#: once; another replica's are seen within this many seconds (until then the plan may name an
#: index that is gone, which costs speed, never results: PostgreSQL plans what exists, and a short
#: answer falls back to the exact scan).
DIRECTORY_TTL = 2.0

# Which vector indexes can serve a cosine search: the valid global ones, and owners' partial ones.
# Planning this catalog join costs ~1 ms, more than a small search: it runs once per TTL, not per search.
_DIRECTORY_SQL = """
SELECT t.owner_id, i.indpred IS NULL AS global
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
JOIN pg_opclass opc ON opc.oid = i.indclass[0]
LEFT JOIN tenant_indexes t ON t.index_name = ic.relname AND t.measure = 'cosine_distance'
WHERE i.indrelid = 'chunks'::regclass AND i.indisvalid
  AND am.amname IN ('hnsw', 'ivfflat') AND opc.opcname = 'vector_cosine_ops'
"""
_TOTAL_SQL = "SELECT coalesce(sum(chunk_count), 0)::bigint FROM owner_stats"
# Owners above the threshold are few (they are the ones an index is for); everyone else is known
# to be at most the threshold without a query.
_LARGE_SQL = "SELECT owner_id, chunk_count FROM owner_stats WHERE chunk_count > %s"
# The caller's own vectors plus those shared through collections, the latter counted only up to
# the threshold: the planner needs "above or below", and the bound keeps the count cheap.
_SHARED_SQL = """
SELECT coalesce((SELECT chunk_count FROM owner_stats WHERE owner_id = %(owner)s), 0)::bigint
     + (SELECT count(*) FROM (SELECT 1 FROM chunks WHERE collection_ids && %(collections)s::uuid[]
                              AND owner_id <> %(owner)s LIMIT %(cap)s) shared)
"""


@dataclass(frozen=True)
class IndexDirectory:
    """What the planner knows without a query: usable indexes, total vectors, the large owners."""

    global_index: bool
    owners: frozenset[uuid.UUID]
    total_vectors: int
    large: dict[uuid.UUID, int]
    at: float


#: Small owners' vector counts as their last search counted them (the statement carries the
#: count; ~0.3 ms). Only the metrics use them (the plan needs just "at most the threshold"), so a
#: count may be this old; a user's next searches within it skip the count. Bounded, LRU.
COUNT_TTL = 30.0
COUNT_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Plan:
    """What the planner chose, and what it saw (reported with the search's metrics)."""

    strategy: Strategy
    #: Vectors the scope holds (after an owner filter narrows it), as the planner counted them.
    scope_size: int
    #: Ran the exact scan after an index scan came back short.
    fallback: bool = False
    #: The scope is this owner's rows, known to be at most the threshold: the search statement
    #: counts them (for the metrics), instead of a planner query before it.
    count_owner: uuid.UUID | None = None
    #: The one owner the search is pinned to (its scope, or an owner filter); None: cross-user.
    owner: uuid.UUID | None = None

    def with_fallback(self) -> Plan:
        return replace(self, strategy=Strategy.EXACT, fallback=True)


def filtered_owner(filters: dict[str, Any]) -> uuid.UUID | None:
    """The one owner an (already validated) filter pins the search to, at its top level or in a
    top-level ``$and``: ``{"user_id": {"$eq": X}}`` or ``{"owner_id": X}``. An owner filter is how
    a superuser (and R2R's clients) search one user's data, and the scope size must follow it."""
    terms: list[dict[str, Any]] = [filters]
    terms += [t for t in filters.get("$and", []) if isinstance(t, dict)]
    for term in terms:
        for key in _OWNER_KEYS:
            if key not in term:
                continue
            value = term[key]
            if isinstance(value, dict):
                if set(value) != {"$eq"}:
                    continue
                value = value["$eq"]
            try:
                return uuid.UUID(str(value))
            except ValueError:
                continue
    return None


def pinned_owner(scope: Scope, filters: dict[str, Any]) -> uuid.UUID | None:
    """The one owner a search reads: a single-owner scope, or an owner filter. A partial index
    serves a query only if its predicate (owner_id = X) follows from the WHERE clause, so this is
    also who may have one."""
    narrow = filtered_owner(filters)
    if narrow is not None and scope.owner_id is not None and narrow != scope.owner_id:
        # Another owner named by a non-superuser: the caller's own scope counts. Planning on that
        # owner's count would leak it (through the recorded scope size, the strategy, the latency).
        narrow = None
    return narrow or (scope.owner_id if scope.is_single_owner else None)


class Planner:
    """The planner and what it remembers between searches, for one database: the index directory
    (trusted for :data:`DIRECTORY_TTL`) and small owners' counts (:data:`COUNT_TTL`).

    One per application, owned by its services and passed to whoever searches or changes indexes
    (the index builder calls :meth:`invalidate` after a build or a drop), so that servers in one
    process (tests run several side by side) never share what they know. Not bound to a
    connection: any connection to the same database serves."""

    def __init__(self) -> None:
        self._directories: dict[int, IndexDirectory] = {}  # by exact threshold
        self._counts: OrderedDict[uuid.UUID, tuple[int, float]] = OrderedDict()

    def invalidate(self) -> None:
        """Forget what is known about indexes (after a build or a drop in this process)."""
        self._directories.clear()

    def remember_count(self, owner: uuid.UUID, count: int) -> None:
        self._counts[owner] = (count, time.monotonic())
        self._counts.move_to_end(owner)
        while len(self._counts) > COUNT_CACHE_SIZE:
            self._counts.popitem(last=False)

    def known_count(self, owner: uuid.UUID) -> int | None:
        found = self._counts.get(owner)
        return found[0] if found is not None and time.monotonic() - found[1] < COUNT_TTL else None

    async def directory(self, conn: psycopg.AsyncConnection, threshold: int) -> IndexDirectory:
        now = time.monotonic()
        found = self._directories.get(threshold)
        if found is not None and now - found.at < DIRECTORY_TTL:
            return found
        rows = await (await conn.execute(_DIRECTORY_SQL)).fetchall()
        total = (await (await conn.execute(_TOTAL_SQL)).fetchone())[0]  # type: ignore[index]
        large = await (await conn.execute(_LARGE_SQL, (threshold,))).fetchall()
        found = IndexDirectory(
            global_index=any(r[1] for r in rows),
            owners=frozenset(r[0] for r in rows if r[0] is not None),
            total_vectors=int(total),
            large={r[0]: int(r[1]) for r in large},
            at=now,
        )
        self._directories[threshold] = found
        return found

    async def plan(
        self, conn: psycopg.AsyncConnection, scope: Scope, filters: dict[str, Any], config: SearchConfig
    ) -> Plan:
        """Decide without a query where possible: the directory knows the large owners, so a search
        over one small owner's rows (most searches) costs no planning round trip."""
        threshold = config.exact_threshold
        directory = await self.directory(conn, threshold)
        one_owner = pinned_owner(scope, filters)
        if one_owner is not None:
            size = directory.large.get(one_owner)
            if size is None:
                known = self.known_count(one_owner)
                if known is not None:
                    return Plan(Strategy.EXACT, known, owner=one_owner)
                return Plan(Strategy.EXACT, 0, count_owner=one_owner, owner=one_owner)
        elif scope.owner_id is None:
            size = directory.total_vectors
        else:  # own rows plus shared collections
            size = directory.large.get(scope.owner_id)
            if size is None:
                params = {"owner": scope.owner_id, "collections": list(scope.collection_ids), "cap": threshold + 1}
                size = int((await (await conn.execute(_SHARED_SQL, params, prepare=True)).fetchone())[0])  # type: ignore[index]
        if size <= threshold:
            return Plan(Strategy.EXACT, size, owner=one_owner)
        if one_owner in directory.owners:
            return Plan(Strategy.OWNER_INDEX, size, owner=one_owner)
        if directory.global_index:
            return Plan(Strategy.ITERATIVE if config.iterative_scan != "off" else Strategy.INDEX, size, owner=one_owner)
        return Plan(Strategy.EXACT, size, owner=one_owner)
