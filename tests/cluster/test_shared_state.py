"""What must happen once across the three replicas, checked through HAProxy: a user's rate limit
is one count whichever replica answers, and a scheduled VACUUM runs once per tick (every replica
tries; one claims the tick's ``maintenance_runs`` row)."""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ragkeep.client import Client
from ragkeep.maintenance import next_tick
from tests.cluster.users import register
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.support.cluster import Cluster, http_status

pytestmark = [pytest.mark.db, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

SCHEDULE = "* * * * * */5"  # six fields: the last one is seconds (every 5 s)
CLUSTER_SETTINGS = {
    "database": {"maintenance": {"vacuum_schedule": SCHEDULE,
                                 "vacuum_tables": ["users", "documents", "chunks", "maintenance_runs"]}},
}
SEARCH_ROUTE = "/v3/retrieval/search"
LIMIT = 7
REQUESTS = 21
#: Ticks the vacuum check waits for, from the cluster's start.
TICKS = 5


def search_answers(c: Cluster) -> list[Counter[str]]:
    """Per replica: its answers to searches by status class (``2xx``, ``4xx`` ...)."""
    out = []
    for r in c.replicas:
        series = c.metrics(r.index).series("ragkeep_http_requests_total")
        out.append(Counter({dict(k)["status"]: int(v) for k, v in series.items() if ("route", SEARCH_ROUTE) in k}))
    return out


def database_seconds_into_minute(c: Cluster) -> float:
    with psycopg.connect(c.primary_url, autocommit=True) as conn:
        row = conn.execute("SELECT extract(epoch FROM now() - date_trunc('minute', now()))").fetchone()
    return float(row[0]) if row else 0.0


def test_a_users_rate_limit_is_counted_once_across_the_replicas(lb: Cluster) -> None:
    user = register(lb.base_url, "r2r", "limited")
    with Client(lb.base_url, email=ADMIN_EMAIL, password=ADMIN_PASSWORD) as admin:
        admin.users.update(user.id, limits_overrides={"route_overrides": {SEARCH_ROUTE: {"route_per_min": LIMIT}}})
    user.upload_text(f"Marker {uuid.uuid4().hex}. Otters hold hands while they sleep.")
    # The limit is per clock minute of the database: start the requests well inside one.
    if (into := database_seconds_into_minute(lb)) > 45:
        time.sleep(61 - into)
    before = search_answers(lb)

    def search(_: int) -> int:
        try:
            user.search("otters")
        except Exception as e:
            status = http_status(e)
            if status is None:
                raise
            return status
        return 200

    with ThreadPoolExecutor(3) as pool:  # three at a time: HAProxy's leastconn spreads them
        statuses = Counter(pool.map(search, range(REQUESTS)))
    after = search_answers(lb)
    per_replica = [b - a for a, b in zip(before, after, strict=True)]
    print(f"\nstatuses {dict(statuses)}; per replica {[dict(p) for p in per_replica]}")
    assert statuses == Counter({200: LIMIT, 429: REQUESTS - LIMIT})
    # Every replica answered some: one count in PostgreSQL, not one per process.
    assert all(sum(p.values()) > 0 for p in per_replica), per_replica
    assert sum(p["2xx"] for p in per_replica) == LIMIT
    user.close()


def test_scheduled_vacuum_runs_once_per_tick_across_the_replicas(lb: Cluster) -> None:
    start = lb.ready_at
    ticks = []
    tick = next_tick(SCHEDULE, start)
    while len(ticks) < TICKS:
        ticks.append(tick)
        tick = next_tick(SCHEDULE, tick)
    # Until the last tick's run had a second and a half to be claimed.
    while datetime.now(UTC) < ticks[-1] + timedelta(seconds=1.5):
        time.sleep(0.2)

    with psycopg.connect(lb.primary_url) as conn:
        rows = conn.execute(
            "SELECT scheduled_for, status, replica FROM maintenance_runs "
            "WHERE trigger = 'schedule' AND task = 'vacuum' AND scheduled_for = ANY(%s) ORDER BY scheduled_for",
            (ticks,),
        ).fetchall()
    by_tick = Counter(r[0] for r in rows)
    assert all(by_tick[t] == 1 for t in ticks), {t.isoformat(): by_tick[t] for t in ticks}
    assert all(r[1] in ("succeeded", "skipped", "running") for r in rows), rows
    assert sum(r[1] == "succeeded" for r in rows) >= TICKS - 1, rows
    pids = set(lb.pids().values())
    assert {int(str(r[2]).rsplit(":", 1)[1]) for r in rows} <= pids, (rows, pids)

    # Every replica tried every tick (its log says so); exactly one claimed it.
    attempts: dict[str, Counter[str]] = {}
    for r in lb.replicas:
        for m in re.finditer(r"maintenance tick (\S+): (claimed as run|already claimed)", r.log.read_text()):
            attempts.setdefault(m.group(1), Counter())[m.group(2)] += 1
    for t in ticks:
        assert attempts.get(t.isoformat()) == Counter({"claimed as run": 1, "already claimed": 2}), (t, attempts)
    print(f"\nticks {[t.isoformat() for t in ticks]}: runs by replica {dict(Counter(r[2] for r in rows))}")
