"""The maintenance service of one server process: the cron scheduler and manual runs.

Every replica runs the scheduler; PostgreSQL decides which one runs each tick:

1. **Claim.** At tick ``T`` each replica INSERTs ``('vacuum', T)`` into ``maintenance_runs``
   with ``ON CONFLICT DO NOTHING``. The unique key lets exactly one INSERT through, however late
   the others arrive (an advisory lock alone would let a replica that wakes after the first run
   finished run ``T`` again). Only the inserter goes on.
2. **Lock.** The claimer takes a session-level advisory lock on its own connection for the length
   of the run, and so does every manual run, so no two runs ever overlap. A tick whose lock is
   busy (the previous run is still going) is recorded as ``skipped`` rather than queued behind it;
   a manual run waits its turn (``queued``).

A manual run never waits inside ``pg_advisory_lock``: a session blocked in a statement holds a
snapshot, and the lock holder's ``REINDEX INDEX CONCURRENTLY`` waits for every older snapshot, so
PostgreSQL would kill one of the two as a deadlock. The runs of one process queue on an
``asyncio.Lock`` (request order); the one at the head polls ``pg_try_advisory_lock`` every
``LOCK_POLL_SECONDS`` on its autocommit connection, idle and outside any transaction in between,
which is what keeps a waiter on another replica from holding a snapshot too.

Ticks come from each replica's clock, but the key is the tick's time, not the moment of arrival,
so clock differences only decide who gets there first. A replica that dies mid-run leaves its row
``queued`` or ``running``; the next tick, manual run or server start marks it failed because its
database session is gone. A run that fails in any other way is recorded ``failed`` with the error.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from croniter import croniter

from ragkeep.config import IndicesConfig, MaintenanceConfig
from ragkeep.errors import InternalError
from ragkeep.maintenance import history
from ragkeep.maintenance.history import MAINTENANCE_LOCK_ID, RunOptions
from ragkeep.maintenance.reindex import CHUNKS, advise, reindex_vector_indexes
from ragkeep.maintenance.vacuum import resolve_tables, schema_tables, vacuum_tables

log = logging.getLogger(__name__)

APPLICATION_NAME = "ragkeep maintenance"

#: How often a queued manual run retries the maintenance lock.
LOCK_POLL_SECONDS = 0.25


def next_tick(schedule: str, after: datetime) -> datetime:
    """The first tick strictly after ``after`` (UTC). A 6th field is seconds (croniter's rule)."""
    tick: datetime = croniter(schedule, after.astimezone(UTC)).get_next(datetime)
    return tick.astimezone(UTC)


@dataclass
class SchedulerCounters:
    """This replica's view: how many ticks it claimed, and how many another replica had."""

    ticks_claimed: int = 0
    ticks_already_claimed: int = 0
    last_tick: datetime | None = None


def _failures(items: list[dict[str, Any]]) -> str | None:
    failed = [f"{i.get('index') or i.get('table')}: {i.get('note')}" for i in items if i.get("status") == "failed"]
    return "; ".join(failed) if failed else None


async def _unlock(conn: psycopg.AsyncConnection) -> None:
    """Release the run lock; closing the connection releases it anyway, so errors (a cancelled
    statement still on the wire) must not hide the reason the run ended."""
    try:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (MAINTENANCE_LOCK_ID,))
    except psycopg.Error:
        log.debug("could not release the maintenance lock; closing the connection releases it", exc_info=True)


async def _take_lock(conn: psycopg.AsyncConnection) -> None:
    """Take the maintenance lock, waiting without a snapshot: ``pg_try_advisory_lock`` never
    blocks, and between tries the autocommit connection sits idle outside any transaction (a
    session blocked in ``pg_advisory_lock`` would hold a snapshot that REINDEX CONCURRENTLY and
    VACUUM must wait out)."""
    while True:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (MAINTENANCE_LOCK_ID,))
        if (await cur.fetchone() or (False,))[0]:
            return
        await asyncio.sleep(LOCK_POLL_SECONDS)


class Maintenance:
    """Owns the scheduler task and the manual runs of this process."""

    def __init__(self, config: MaintenanceConfig, url: str, indices: IndicesConfig | None = None) -> None:
        self.config = config
        self.url = url
        self.indices = indices or IndicesConfig()
        self.counters = SchedulerCounters()
        self._scheduler: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[None]] = set()
        #: This process's manual runs, in request order; only the head polls the advisory lock.
        self._queue = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler when a schedule is configured, and fail the runs a dead server left."""
        if self.config.vacuum_schedule and self._scheduler is None:
            self._scheduler = asyncio.create_task(self._schedule_loop(), name="maintenance scheduler")
        sweep = asyncio.create_task(self._sweep(), name="maintenance sweep")
        self._runs.add(sweep)
        sweep.add_done_callback(self._runs.discard)

    async def _sweep(self) -> None:
        """Mark the runs of dead sessions failed (a replica killed while a run was queued or running)."""
        try:
            async with await self._connect() as conn:
                if swept := await history.sweep_interrupted(conn):
                    log.warning("marked %d interrupted maintenance run(s) failed", swept)
        except psycopg.Error as e:
            log.warning("could not check for interrupted maintenance runs: %s", e)

    @property
    def scheduling(self) -> bool:
        return self._scheduler is not None and not self._scheduler.done()

    async def stop(self) -> None:
        """Stop scheduling and cancel runs in progress (they are recorded as failed)."""
        tasks = [t for t in (self._scheduler, *self._runs) if t is not None and not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._scheduler = None

    def next_run(self, now: datetime | None = None) -> datetime | None:
        if not self.config.vacuum_schedule:
            return None
        return next_tick(self.config.vacuum_schedule, now or datetime.now(UTC))

    async def _connect(self) -> psycopg.AsyncConnection:
        """The run's own connection: autocommit (VACUUM, REINDEX CONCURRENTLY), outside the pool."""
        return await psycopg.AsyncConnection.connect(self.url, autocommit=True, application_name=APPLICATION_NAME)

    # -- scheduled runs --------------------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        schedule = self.config.vacuum_schedule
        if schedule is None:  # started only with a schedule
            return
        log.info("maintenance scheduler started (vacuum_schedule %r)", schedule)
        while True:
            tick = next_tick(schedule, datetime.now(UTC))
            while (delay := (tick - datetime.now(UTC)).total_seconds()) > 0:
                await asyncio.sleep(delay)
            try:
                await self.run_tick(tick)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("maintenance tick %s failed", tick.isoformat())

    def _scheduled_options(self) -> RunOptions:
        return RunOptions(analyze=self.config.vacuum_analyze, full=self.config.vacuum_full, reindex=False)

    async def run_tick(self, tick: datetime) -> dict[str, Any] | None:
        """Claim and run the tick ``tick``; None when another replica claimed it first."""
        conn = await self._connect()
        try:
            await history.sweep_interrupted(conn)
            tables = list(self.config.vacuum_tables) or await schema_tables(conn)
            run = await history.claim(
                conn, task="vacuum", trigger="schedule", options=self._scheduled_options(), tables=tables,
                scheduled_for=tick,
            )
            self.counters.last_tick = tick
            if run is None:
                self.counters.ticks_already_claimed += 1
                log.info("maintenance tick %s: already claimed by another replica", tick.isoformat())
                return None
            self.counters.ticks_claimed += 1
            log.info("maintenance tick %s: claimed as run %d", tick.isoformat(), run["id"])
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (MAINTENANCE_LOCK_ID,))
            locked = (await cur.fetchone() or (False,))[0]
            if not locked:
                busy = await self._run_in_progress(conn)
                await history.finish(
                    conn, run["id"], status="skipped", items=[],
                    error=f"skipped: maintenance run {busy or '(unknown)'} was still in progress",
                )
                log.warning("maintenance tick %s skipped: run %s still in progress", tick.isoformat(), busy)
                return await history.get_run(conn, run["id"])
            try:
                await self._execute(conn, run, scheduled=True)
            finally:
                await _unlock(conn)
            return await history.get_run(conn, run["id"])
        finally:
            await conn.close()

    @staticmethod
    async def _run_in_progress(conn: psycopg.AsyncConnection) -> int | None:
        cur = await conn.execute(
            "SELECT id FROM maintenance_runs WHERE status = 'running' ORDER BY started_at DESC LIMIT 1"
        )
        row = await cur.fetchone()
        return None if row is None else int(row[0])

    # -- manual runs -----------------------------------------------------------------------------

    async def start_manual(self, options: RunOptions) -> dict[str, Any]:
        """Record a manual run (``queued``) and start it in the background; return its row.

        Raises :class:`~ragkeep.maintenance.vacuum.UnknownTables` before anything is recorded.
        """
        conn = await self._connect()
        try:
            await history.sweep_interrupted(conn)
            tables = await resolve_tables(conn, options.tables)
            run = await history.claim(conn, task="vacuum", trigger="manual", options=options, tables=tables)
            if run is None:  # no scheduled_for: nothing to conflict with
                raise InternalError("a manual maintenance run could not be recorded")
        except BaseException:
            await conn.close()
            raise
        task = asyncio.create_task(self._manual(conn, run), name=f"maintenance run {run['id']}")
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)
        return run

    async def _manual(self, conn: psycopg.AsyncConnection, run: dict[str, Any]) -> None:
        run_id = int(run["id"])
        try:
            async with self._queue:  # this process's runs one after the other, in request order
                await _take_lock(conn)  # then across replicas
                try:
                    await self._execute(conn, run, scheduled=False)
                finally:
                    await _unlock(conn)
        except asyncio.CancelledError:
            await self._record_cancelled(conn, run_id)
            raise
        except Exception as e:
            log.exception("maintenance run %d failed", run_id)
            await self._record_failed(run_id, str(e).strip() or type(e).__name__)
        finally:
            await conn.close()

    # -- one run ---------------------------------------------------------------------------------

    async def _execute(self, conn: psycopg.AsyncConnection, run: dict[str, Any], *, scheduled: bool) -> None:
        """REINDEX (when asked, or advised and auto_reindex) then VACUUM; every outcome recorded."""
        run_id = int(run["id"])
        options = RunOptions(
            analyze=run["vacuum_analyze"], full=run["vacuum_full"], reindex=run["reindex_first"],
            tables=tuple(run["tables"]),
        )
        try:
            advice = await advise(conn, self.config)
            reindex = options.reindex or (scheduled and self.config.auto_reindex and advice.recommended)
            if reindex and not options.full and (not options.tables or CHUNKS in options.tables):
                await self._reindex(conn, run, replace(options, reindex=True), advice.as_dict())
            await history.mark_started(conn, run_id)
            items, _ = await vacuum_tables(
                conn,
                list(run["tables"]),
                analyze=options.analyze,
                full=options.full,
                config=self.config if scheduled else None,
                progress=lambda items: history.save_items(conn, run_id, items),
            )
            error = _failures(items)
            await history.finish(
                conn, run_id, status="failed" if error else "succeeded", items=items, error=error,
                advice=advice.as_dict(),
            )
            log.info(
                "maintenance run %d (%s) finished%s", run_id, run["trigger"], f" with errors: {error}" if error else ""
            )
        except asyncio.CancelledError:
            await self._record_cancelled(conn, run_id)
            raise
        except psycopg.Error as e:
            log.exception("maintenance run %d failed", run_id)
            try:
                await history.finish(conn, run_id, status="failed", items=[], error=str(e).strip())
            except psycopg.Error:  # the run's connection is broken: record it from another one
                await self._record_failed(run_id, str(e).strip())

    async def _reindex(
        self, conn: psycopg.AsyncConnection, parent: dict[str, Any], options: RunOptions, advice: dict[str, Any]
    ) -> None:
        child = await history.claim(
            conn, task="reindex", trigger=parent["trigger"], options=options, tables=[CHUNKS],
            scheduled_for=parent["scheduled_for"], parent_id=int(parent["id"]), status="running",
        )
        if child is None:  # this tick's reindex exists already; cannot happen for the tick's claimer
            return
        child_id = int(child["id"])
        try:
            items = await reindex_vector_indexes(
                conn, progress=lambda items: history.save_items(conn, child_id, items), indices_config=self.indices
            )
        except asyncio.CancelledError:
            await self._record_cancelled(conn, child_id)
            raise
        except psycopg.Error as e:
            await history.finish(conn, child_id, status="failed", items=[], error=str(e).strip(), advice=advice)
            return
        error = _failures(items)
        await history.finish(
            conn, child_id, status="failed" if error else "succeeded", items=items, error=error, advice=advice
        )

    async def _record_cancelled(self, conn: psycopg.AsyncConnection, run_id: int) -> None:
        """Stop the statement on the server and mark the run failed, from a fresh connection
        (the run's own may be mid-statement). Best effort: the sweep catches what this misses."""
        await self._record_failed(run_id, "cancelled: the server process shut down during the run", cancel=True)

    async def _record_failed(self, run_id: int, error: str, *, cancel: bool = False) -> None:
        """Mark the run (and its reindex row) failed with ``error`` if still open, from a fresh
        connection: the run's own may be broken or mid-statement. Best effort; the sweep catches
        what this misses once the run's session is gone."""

        async def record() -> None:
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as other:
                if cancel:
                    await other.execute(
                        "SELECT pg_cancel_backend(backend_pid) FROM maintenance_runs "
                        "WHERE id = %s AND status IN ('queued', 'running')",
                        (run_id,),
                    )
                await other.execute(
                    "UPDATE maintenance_runs SET status = 'failed', finished_at = clock_timestamp(), error = %s "
                    "WHERE (id = %s OR parent_id = %s) AND status IN ('queued', 'running')",
                    (error, run_id, run_id),
                )

        try:
            await asyncio.shield(asyncio.wait_for(record(), timeout=10))
        except (asyncio.CancelledError, Exception):
            log.warning("could not record maintenance run %d as failed", run_id, exc_info=True)
