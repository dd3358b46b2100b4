"""Three real server processes on one database with a VACUUM every two seconds: every replica
tries every tick, exactly one runs it, and no two runs overlap in time."""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import psycopg
import pytest

from ragkeep.maintenance import next_tick
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, login
from tests.support.replicas import Replica, serve_processes

SCHEDULE = "* * * * * */2"  # the sixth field is seconds
OBSERVE_SECONDS = 14

#: The production app factory under uvicorn, as ``ragkeep serve`` runs it (settings from
#: RAGKEEP_CONFIG), with plain log lines so the test can read each replica's tick decisions.
LAUNCH = """
import logging, sys
import uvicorn
from ragkeep.api.app import create_app
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def write_config(path: Path, url: str) -> None:
    path.write_text(
        f"""
[app]
log_level = "info"

[database]
url = {json.dumps(url)}
pool_min_size = 1
pool_max_size = 3

[database.maintenance]
vacuum_schedule = "{SCHEDULE}"
vacuum_tables = ["users", "documents", "chunks", "maintenance_runs"]

[embedding]
threads = 1

[auth]
admin_email = "{ADMIN_EMAIL}"
admin_password = "{ADMIN_PASSWORD}"
""",
        encoding="utf-8",
    )


@pytest.fixture
def replicas(db_factory: Callable[[str], str], tmp_path: Path) -> Iterator[tuple[str, list[Replica]]]:
    url = db_factory("replicas")
    config = tmp_path / "ragkeep.toml"
    write_config(config, url)
    with serve_processes(tmp_path, 3, lambda port: [sys.executable, "-c", LAUNCH, str(port)],
                         {"RAGKEEP_CONFIG": str(config)}) as started:
        yield url, started


def test_three_replicas_run_each_tick_once_and_never_overlap(replicas: tuple[str, list[Replica]]) -> None:
    url, servers = replicas
    ready = datetime.now(UTC)
    time.sleep(OBSERVE_SECONDS)
    statuses = []
    for r in servers:
        with login(r.base_url, ADMIN_EMAIL, ADMIN_PASSWORD) as admin:
            statuses.append(admin.get("/v3/system/status").json()["results"])
    end = datetime.now(UTC)

    # The ticks every replica was up for, minus the last second (a run may still be under way).
    ticks = []
    tick = next_tick(SCHEDULE, ready)
    while tick <= end - timedelta(seconds=1.5):
        ticks.append(tick)
        tick = next_tick(SCHEDULE, tick)
    assert len(ticks) >= 5

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT scheduled_for, status, started_at, finished_at, replica, task FROM maintenance_runs "
            "WHERE trigger = 'schedule' ORDER BY scheduled_for"
        ).fetchall()
    by_tick = Counter(r[0] for r in rows if r[5] == "vacuum")
    # Exactly one run per tick: none missing, none twice.
    assert all(by_tick[t] == 1 for t in ticks), {t.isoformat(): by_tick[t] for t in ticks}
    assert max(by_tick.values()) == 1
    in_window = [r for r in rows if r[0] in set(ticks)]
    assert all(r[1] in ("succeeded", "skipped") for r in in_window), in_window
    assert sum(r[1] == "succeeded" for r in in_window) >= len(ticks) - 1

    # Never two at once: sorted by start, each run starts after the previous one finished.
    ran = sorted((r for r in rows if r[2] is not None and r[1] != "skipped"), key=lambda r: r[2])
    for previous, current in pairwise(ran):
        assert previous[3] is not None and current[2] >= previous[3], (previous, current)

    # Every replica tried every tick; exactly one got it. (Read from the replicas' logs.)
    pids = {r.process.pid for r in servers}
    assert {int(r[4].rsplit(":", 1)[1]) for r in rows} <= pids
    attempts: dict[str, Counter[str]] = {}
    for r in servers:
        for m in re.finditer(r"maintenance tick (\S+): (claimed as run|already claimed)", r.log.read_text()):
            attempts.setdefault(m.group(1), Counter())[m.group(2)] += 1
    for t in ticks:
        seen = attempts.get(t.isoformat())
        assert seen == Counter({"claimed as run": 1, "already claimed": 2}), (t, seen)
    claimed = sum(s["maintenance"]["ticks_claimed_here"] for s in statuses)
    elsewhere = sum(s["maintenance"]["ticks_claimed_elsewhere"] for s in statuses)
    assert all(s["maintenance"]["scheduler_running"] and s["maintenance"]["next_run"] for s in statuses)
    assert elsewhere >= 2 * len(ticks) - 2 and claimed >= len(ticks) - 1

    durations = [(r[3] - r[2]).total_seconds() for r in ran if r[3] is not None]
    winners = Counter(r[4] for r in in_window)
    summary = {
        "ticks_observed": len(ticks),
        "rows_for_those_ticks": len(in_window),
        "succeeded": sum(r[1] == "succeeded" for r in in_window),
        "skipped": sum(r[1] == "skipped" for r in in_window),
        "runs_by_replica": dict(winners),
        "run_seconds_max": round(max(durations), 3),
        "run_seconds_median": round(sorted(durations)[len(durations) // 2], 3),
        "min_gap_between_runs_seconds": round(
            min((b[2] - a[3]).total_seconds() for a, b in pairwise(ran)), 3
        ),
    }
    print("three-replica scheduler:", json.dumps(summary))
