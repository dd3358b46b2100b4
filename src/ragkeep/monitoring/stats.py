"""The figures of ``GET /v3/system/stats`` and ``GET /v3/system/users/{id}/stats``, from PostgreSQL.

Everything per user or per route is read from the activity tables (hourly rows, plus the daily
rows they roll up into), so every replica answers the same. A window reaching past the hourly
retention takes whole days from the daily rows. Percentiles come from summed latency histograms
(``ragkeep_hist_sum``): they are the upper bounds of the buckets holding them (see
:func:`ragkeep.monitoring.searches.hist_percentile`), never averages of percentiles.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ragkeep.db.replica import replica_name
from ragkeep.monitoring import database
from ragkeep.monitoring.searches import hist_percentile

# Hourly rows since the window's start, and daily rows from the window's first UTC day on.
# {user} is either nothing or a filter on one user: fixed SQL text, the id is a parameter.
_SEARCHES = """
SELECT hour AS t, true AS hourly, user_id, kind, strategy, cross_user, searches, short_results, fallbacks,
       vectors, total_ms, db_ms, max_ms, latency_hist
FROM search_activity WHERE hour >= %(since)s {user}
UNION ALL
SELECT day, false, user_id, kind, strategy, cross_user, searches, short_results, fallbacks,
       vectors, total_ms, db_ms, max_ms, latency_hist
FROM search_activity_daily WHERE day >= date_trunc('day', %(since)s::timestamptz, 'UTC') {user}
"""
_REQUESTS = """
SELECT hour AS t, true AS hourly, method, route, status_class, requests, total_ms, max_ms, latency_hist
FROM request_activity WHERE hour >= %(since)s
UNION ALL
SELECT day, false, method, route, status_class, requests, total_ms, max_ms, latency_hist
FROM request_activity_daily WHERE day >= date_trunc('day', %(since)s::timestamptz, 'UTC')
"""
_USERS = """
SELECT hour AS t, true AS hourly, user_id, requests, errors, 1 AS active_hours
FROM user_activity WHERE hour >= %(since)s {user}
UNION ALL
SELECT day, false, user_id, requests, errors, active_hours FROM user_activity_daily
WHERE day >= date_trunc('day', %(since)s::timestamptz, 'UTC') {user}
"""
_SEARCH_SUMS = """
sum(searches)::bigint AS searches, sum(short_results)::bigint AS short_results,
sum(fallbacks)::bigint AS fallbacks, sum(total_ms) AS total_ms, sum(db_ms) AS db_ms, max(max_ms) AS max_ms,
coalesce(sum(vectors) FILTER (WHERE kind <> 'full_text'), 0)::bigint AS vectors,
coalesce(sum(searches) FILTER (WHERE kind <> 'full_text'), 0)::bigint AS vector_searches,
count(DISTINCT user_id) AS users, ragkeep_hist_sum(latency_hist) AS hist
"""
_REQUEST_SUMS = """
sum(requests)::bigint AS requests,
coalesce(sum(requests) FILTER (WHERE status_class IN ('4xx', '5xx')), 0)::bigint AS errors,
coalesce(sum(requests) FILTER (WHERE status_class = '5xx'), 0)::bigint AS server_errors,
sum(total_ms) AS total_ms, max(max_ms) AS max_ms, ragkeep_hist_sum(latency_hist) AS hist
"""
_HOUR_OF_DAY = "extract(hour FROM t AT TIME ZONE 'UTC')::int"


def _source(template: str, user_id: uuid.UUID | None) -> sql.SQL:
    return sql.SQL(template.replace("{user}", "AND user_id = %(user)s" if user_id else ""))


async def _fetch(
    conn: psycopg.AsyncConnection, query: sql.SQL | sql.Composed, params: dict[str, Any]
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


def _aggregate(source: sql.SQL, sums: str, group: tuple[str, ...] = (), where: str = "",
               order: str = "", limit: bool = False) -> sql.Composed:
    """SELECT <group>, <sums> FROM (<source>) s [WHERE] [GROUP BY] [ORDER BY] [LIMIT]; names are ours."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in group)
    parts: list[sql.Composable] = [sql.SQL("WITH s AS ("), source, sql.SQL(") SELECT ")]
    if group:
        parts += [cols, sql.SQL(", ")]
    parts += [sql.SQL(sums), sql.SQL(" FROM s")]
    if where:
        parts.append(sql.SQL(" WHERE " + where))
    if group:
        parts += [sql.SQL(" GROUP BY "), cols]
    if order:
        parts.append(sql.SQL(" ORDER BY " + order))
    if limit:
        parts.append(sql.SQL(" LIMIT %(top)s"))
    return sql.Composed(parts)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


def latency(row: dict[str, Any], count_key: str) -> dict[str, Any]:
    """p50/p95 (bucket upper bounds), mean and max of a row of sums with a histogram."""
    n = int(row.get(count_key) or 0)
    hist = row.get("hist") or []
    max_ms = row.get("max_ms")
    return {
        "p50_ms": _ms(hist_percentile(hist, 0.5, max_ms)),
        "p95_ms": _ms(hist_percentile(hist, 0.95, max_ms)),
        "mean_ms": _ms(row["total_ms"] / n) if n else None,
        "max_ms": _ms(max_ms) if n else None,
    }


def search_summary(row: dict[str, Any]) -> dict[str, Any]:
    n = int(row.get("searches") or 0)
    vector_searches = int(row.get("vector_searches") or 0)
    return {
        "searches": n,
        **latency(row, "searches"),
        "mean_db_ms": _ms(row["db_ms"] / n) if n else None,
        # Scope size the planner saw, per semantic/hybrid search (full-text searches scan no vectors).
        "vectors_per_query": round(int(row.get("vectors") or 0) / vector_searches, 1) if vector_searches else None,
        "fallbacks": int(row.get("fallbacks") or 0),
        "short_results": int(row.get("short_results") or 0),
    }


def _by_hour_of_day(rows: list[dict[str, Any]], key: str) -> list[int]:
    out = [0] * 24
    for r in rows:
        out[r["h"]] += int(r[key])
    return out


def _peak(per_hour: list[int]) -> int | None:
    return max(range(24), key=lambda h: (per_hour[h], -h)) if any(per_hour) else None


async def search_stats(
    conn: psycopg.AsyncConnection, since: datetime, top: int, user_id: uuid.UUID | None = None
) -> dict[str, Any]:
    """Searches in the window: overall, by kind and strategy, by hour of day, and the top users."""
    source = _source(_SEARCHES, user_id)
    params = {"since": since, "user": user_id, "top": top}
    overall = (await _fetch(conn, _aggregate(source, _SEARCH_SUMS), params))[0]
    plans = await _fetch(conn, _aggregate(source, _SEARCH_SUMS, ("kind", "strategy"), order="searches DESC"), params)
    # S608: the only value formatted in is the constant _HOUR_OF_DAY, never input.
    hours = await _fetch(conn, sql.SQL("WITH s AS (") + source + sql.SQL(
        f") SELECT {_HOUR_OF_DAY} AS h, sum(searches)::bigint AS n FROM s WHERE hourly GROUP BY 1"  # noqa: S608
    ), params)
    per_hour = _by_hour_of_day(hours, "n")
    result: dict[str, Any] = {
        **search_summary(overall),
        "users": int(overall["users"] or 0),
        "cross_user": None,
        "by_plan": [{"kind": p["kind"], "strategy": p["strategy"], **search_summary(p)} for p in plans],
        "by_hour_of_day": per_hour,
        "peak_hour": _peak(per_hour),
    }
    cross = await _fetch(
        conn, _aggregate(source, "coalesce(sum(searches), 0)::bigint AS n", where="cross_user"), params
    )
    result["cross_user"] = int(cross[0]["n"])
    if user_id is None:
        users = await _fetch(conn, _aggregate(source, _SEARCH_SUMS, ("user_id",), order="searches DESC, user_id",
                                              limit=True), params)
        details = await _user_details(conn, [u["user_id"] for u in users])
        result["top_users"] = [
            {"user_id": u["user_id"], **details.get(u["user_id"], _NO_DETAILS), **search_summary(u)} for u in users
        ]
    return result


_NO_DETAILS = {"email": None, "documents": 0, "chunks": 0}


async def _user_details(conn: psycopg.AsyncConnection, ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    if not ids:
        return {}
    rows = await _fetch(conn, sql.SQL(
        """SELECT i.id, u.email, coalesce(s.document_count, 0)::bigint AS documents,
                  coalesce(s.chunk_count, 0)::bigint AS chunks
           FROM unnest(%(ids)s::uuid[]) AS i(id)
           LEFT JOIN users u ON u.id = i.id LEFT JOIN owner_stats s ON s.owner_id = i.id"""), {"ids": ids})
    return {r.pop("id"): r for r in rows}


async def request_stats(conn: psycopg.AsyncConnection, since: datetime) -> dict[str, Any]:
    """Requests in the window per route (method + template): counts, errors, latency, peak hour."""
    source = sql.SQL(_REQUESTS)
    params = {"since": since}
    overall = (await _fetch(conn, _aggregate(source, _REQUEST_SUMS), params))[0]
    routes = await _fetch(conn, _aggregate(source, _REQUEST_SUMS, ("method", "route"), order="requests DESC, route"),
                          params)
    classes = await _fetch(conn, _aggregate(source, "sum(requests)::bigint AS n", ("status_class",),
                                            order="status_class"), params)
    # S608: the only value formatted in is the constant _HOUR_OF_DAY, never input.
    hours = await _fetch(conn, sql.SQL("WITH s AS (") + source + sql.SQL(
        f") SELECT method, route, {_HOUR_OF_DAY} AS h, sum(requests)::bigint AS n "  # noqa: S608
        "FROM s WHERE hourly GROUP BY 1, 2, 3"), params)
    per_route_hours: dict[tuple[str, str], list[int]] = {}
    for r in hours:
        per_route_hours.setdefault((r["method"], r["route"]), [0] * 24)[r["h"]] += int(r["n"])
    all_hours = [sum(v[h] for v in per_route_hours.values()) for h in range(24)]
    return {
        "requests": int(overall["requests"] or 0),
        "errors": int(overall["errors"] or 0),
        "server_errors": int(overall["server_errors"] or 0),
        **latency(overall, "requests"),
        "by_status_class": {c["status_class"]: int(c["n"]) for c in classes},
        "by_hour_of_day": all_hours,
        "peak_hour": _peak(all_hours),
        "routes": [
            {
                "method": r["method"], "route": r["route"], "requests": int(r["requests"]),
                "errors": int(r["errors"]), "server_errors": int(r["server_errors"]), **latency(r, "requests"),
                "peak_hour": _peak(per_route_hours.get((r["method"], r["route"]), [0] * 24)),
            }
            for r in routes
        ],
    }


async def active_users(conn: psycopg.AsyncConnection, since: datetime) -> dict[str, Any]:
    """Distinct users with an authenticated request: now, per hour and per UTC day of the window."""
    source = _source(_USERS, None)
    params = {"since": since}
    now = await database.active_now(conn)
    per_hour = await _fetch(conn, sql.SQL("WITH s AS (") + source + sql.SQL(
        ") SELECT t AS hour, count(DISTINCT user_id) AS users FROM s WHERE hourly GROUP BY 1 ORDER BY 1"), params)
    per_day = await _fetch(conn, sql.SQL("WITH s AS (") + source + sql.SQL(
        ") SELECT date_trunc('day', t, 'UTC') AS day, count(DISTINCT user_id) AS users FROM s GROUP BY 1 ORDER BY 1"),
        params)
    window = await _fetch(conn, _aggregate(source, "count(DISTINCT user_id) AS users"), params)
    return {
        "current_hour": now["hour"],
        "current_day": now["day"],
        "window": int(window[0]["users"]),
        "per_hour": [{"hour": r["hour"], "users": int(r["users"])} for r in per_hour],
        "per_day": [{"day": r["day"], "users": int(r["users"])} for r in per_day],
    }


_SNAPSHOT_TOTALS = """
SELECT taken_at, sum(bytes)::bigint AS total_bytes,
       coalesce(sum(bytes) FILTER (WHERE kind = 'table'), 0)::bigint AS table_bytes,
       coalesce(sum(bytes) FILTER (WHERE kind = 'index'), 0)::bigint AS index_bytes
FROM storage_sizes WHERE taken_at >= %(since)s GROUP BY taken_at ORDER BY taken_at
"""
_FIRST_SNAPSHOT_TABLES = """
SELECT table_name, sum(bytes)::bigint AS bytes FROM storage_sizes
WHERE taken_at = (SELECT min(taken_at) FROM storage_snapshots WHERE taken_at >= %(since)s)
GROUP BY table_name
"""


async def storage_stats(conn: psycopg.AsyncConnection, since: datetime) -> dict[str, Any]:
    """Sizes now, per table (its indexes included), and the snapshots' totals over the window."""
    tables: dict[str, dict[str, Any]] = {}
    for r in await database.relation_sizes(conn):
        t = tables.setdefault(r["table_name"], {"table": r["table_name"], "table_bytes": 0, "index_bytes": 0,
                                                "est_rows": None, "indexes": []})
        if r["kind"] == "table":
            t["table_bytes"] += r["bytes"]
            t["est_rows"] = r["est_rows"]
        else:
            t["index_bytes"] += r["bytes"]
            t["indexes"].append({"index": r["relation"], "bytes": r["bytes"]})
    first = {r["table_name"]: r["bytes"] for r in await _fetch(conn, sql.SQL(_FIRST_SNAPSHOT_TABLES), {"since": since})}
    for t in tables.values():
        t["total_bytes"] = t["table_bytes"] + t["index_bytes"]
        t["growth_bytes"] = t["total_bytes"] - first[t["table"]] if t["table"] in first else None
    history = await _fetch(conn, sql.SQL(_SNAPSHOT_TOTALS), {"since": since})
    total = sum(t["total_bytes"] for t in tables.values())
    per_day = None
    if len(history) >= 2:
        span = (history[-1]["taken_at"] - history[0]["taken_at"]).total_seconds() / 86400
        if span > 0:
            per_day = round((history[-1]["total_bytes"] - history[0]["total_bytes"]) / span)
    return {
        "total_bytes": total,
        "tables": sorted(tables.values(), key=lambda t: (-t["total_bytes"], t["table"])),
        "snapshots": history,
        "growth_bytes_per_day": per_day,
    }


async def instances(conn: psycopg.AsyncConnection, timeout_seconds: float) -> list[dict[str, Any]]:
    """Replicas that wrote their memory/CPU row within the timeout (``this``: the answering one)."""
    rows = await _fetch(conn, sql.SQL(
        "SELECT * FROM metrics_instances WHERE seen_at >= now() - make_interval(secs => %(t)s) ORDER BY replica"),
        {"t": timeout_seconds})
    me = replica_name()
    for r in rows:
        r["this"] = r["replica"] == me
    return rows


async def content_stats(conn: psycopg.AsyncConnection, top: int) -> dict[str, Any]:
    per_user = await _fetch(conn, sql.SQL(
        """SELECT s.owner_id AS user_id, u.email, s.document_count AS documents, s.chunk_count AS chunks
           FROM owner_stats s LEFT JOIN users u ON u.id = s.owner_id
           WHERE s.document_count > 0 OR s.chunk_count > 0
           ORDER BY s.chunk_count DESC, s.document_count DESC, s.owner_id LIMIT %(top)s"""), {"top": top})
    return {**await database.totals(conn), "per_user": per_user}


def window_start(window_hours: int, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(hours=window_hours)


async def _snapshot(conn: psycopg.AsyncConnection) -> None:
    """Read every section from one snapshot: a flush landing between two queries would otherwise
    make the total disagree with its parts. Must be the transaction's first statement."""
    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


async def system_stats(
    conn: psycopg.AsyncConnection, *, window_hours: int, top: int, instance_timeout: float
) -> dict[str, Any]:
    async with conn.transaction():
        await _snapshot(conn)
        return await _system_stats(conn, window_hours=window_hours, top=top, instance_timeout=instance_timeout)


async def _system_stats(
    conn: psycopg.AsyncConnection, *, window_hours: int, top: int, instance_timeout: float
) -> dict[str, Any]:
    now = datetime.now(UTC)
    since = window_start(window_hours, now)
    return {
        "generated_at": now,
        "window_hours": window_hours,
        "since": since,
        "replica": replica_name(),
        "searches": await search_stats(conn, since, top),
        "requests": await request_stats(conn, since),
        "active_users": await active_users(conn, since),
        "cache": await database.cache_stats(conn),
        "instances": await instances(conn, instance_timeout),
        "storage": await storage_stats(conn, since),
        "content": await content_stats(conn, top),
    }


async def user_stats(conn: psycopg.AsyncConnection, user_id: uuid.UUID, *, window_hours: int) -> dict[str, Any] | None:
    """One user's figures over the window; None when there is no such user."""
    async with conn.transaction():
        await _snapshot(conn)
        return await _user_stats(conn, user_id, window_hours=window_hours)


async def _user_stats(conn: psycopg.AsyncConnection, user_id: uuid.UUID, *, window_hours: int) -> dict[str, Any] | None:
    details = (await _user_details(conn, [user_id]))[user_id]
    if details["email"] is None:
        return None
    now = datetime.now(UTC)
    since = window_start(window_hours, now)
    params = {"since": since, "user": user_id}
    searches = await search_stats(conn, since, 0, user_id)
    users_source = _source(_USERS, user_id)
    req = (await _fetch(conn, _aggregate(users_source, "coalesce(sum(requests), 0)::bigint AS requests, "
                                         "coalesce(sum(errors), 0)::bigint AS errors, "
                                         "coalesce(sum(active_hours), 0)::bigint AS active_hours"), params))[0]
    search_days = await _fetch(conn, sql.SQL("WITH s AS (") + _source(_SEARCHES, user_id) + sql.SQL(
        ") SELECT date_trunc('day', t, 'UTC') AS day, sum(searches)::bigint AS n FROM s GROUP BY 1"), params)
    request_days = await _fetch(conn, sql.SQL("WITH s AS (") + users_source + sql.SQL(
        ") SELECT date_trunc('day', t, 'UTC') AS day, sum(requests)::bigint AS n FROM s GROUP BY 1"), params)
    days: dict[datetime, dict[str, Any]] = {}
    for key, rows in (("searches", search_days), ("requests", request_days)):
        for r in rows:
            days.setdefault(r["day"], {"day": r["day"], "searches": 0, "requests": 0})[key] = int(r["n"])
    return {
        "user_id": user_id,
        **details,
        "generated_at": now,
        "window_hours": window_hours,
        "since": since,
        "searches": searches,
        "requests": {"requests": int(req["requests"]), "errors": int(req["errors"]),
                     "active_hours": int(req["active_hours"])},
        "per_day": [days[d] for d in sorted(days)],
    }
