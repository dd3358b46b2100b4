"""What ``GET /v3/system/status`` reports: this process, the database, the model, maintenance."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from ragkeep import __version__
from ragkeep.config import Settings
from ragkeep.db.replica import replica_name
from ragkeep.maintenance import history
from ragkeep.maintenance.reindex import advise, vector_indexes
from ragkeep.maintenance.scheduler import Maintenance


async def system_status(
    conn: psycopg.AsyncConnection,
    *,
    settings: Settings,
    embedded: bool,
    model: str,
    dimension: int,
    started_at: float,
    maintenance: Maintenance,
) -> dict[str, Any]:
    cur = await conn.execute(
        "SELECT current_setting('server_version'), (SELECT extversion FROM pg_extension WHERE extname = 'vector')"
    )
    server_version, pgvector_version = await cur.fetchone() or (None, None)
    indexes = await vector_indexes(conn)
    config = settings.database.maintenance
    counters = maintenance.counters
    return {
        "version": __version__,
        "replica": replica_name(),
        "started_at": datetime.fromtimestamp(started_at, UTC),
        "uptime_seconds": round(time.time() - started_at, 1),
        "database": {
            "kind": "embedded" if embedded else "external",
            "server_version": server_version,
            "pgvector_version": pgvector_version,
        },
        "embedding": {"provider": settings.embedding.provider, "model": model, "dimension": dimension},
        "vector_indexes": {
            "total": len(indexes),
            "valid": sum(i.valid for i in indexes),
            "bytes": sum(i.bytes for i in indexes),
        },
        "maintenance": {
            "vacuum_schedule": config.vacuum_schedule,
            "vacuum_analyze": config.vacuum_analyze,
            "vacuum_full": config.vacuum_full,
            "auto_reindex": config.auto_reindex,
            "scheduler_running": maintenance.scheduling,
            "ticks_claimed_here": counters.ticks_claimed,
            "ticks_claimed_elsewhere": counters.ticks_already_claimed,
            "last_run": await history.last_run(conn),
            "next_run": maintenance.next_run(),
            "reindex_advice": (await advise(conn, config)).as_dict(),
        },
    }
