"""Finding 6 of issue 10: PostgreSQL stopped or killed under 8 search clients.

Every failed request must be a 503 with Retry-After, answered promptly (no request hangs until
the database is back), and searches must succeed again soon after it is. A ``kill -9`` of the
embedded postmaster must be noticed by the server, which restarts it and says so in its log.
Real processes throughout: a ``ragkeep serve`` subprocess, PostgreSQL from the wheel.
Figures (503 latency, seconds to full throughput) come from ``bench/outage.py``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.outage import SearchLoad, ServerProcess, figures, own_postgres, postmaster_pid, user_client

#: These start PostgreSQL servers of their own (not through ``pg_url``).
pytestmark = pytest.mark.db

#: A correctness bound for "answered, not hung": the issue asks for < 2 s; the margin is for a
#: loaded two-core machine (bench/outage.py prints the real figures).
ANSWER_WITHIN = 2.0
CLIENTS = 8


def _bad(samples, bound: float) -> list:
    """Requests that were not a 200 or a prompt 503 with Retry-After."""
    return [
        s for s in samples
        if s.status != 200 and (s.status != 503 or not s.retry_after or s.seconds >= bound)
    ]


def test_postgres_stopped_for_5_s_gives_prompt_503s_and_recovers(tmp_path: Path) -> None:
    with own_postgres(tmp_path / "pg") as (pg, url), ServerProcess(tmp_path / "home", url) as server:
        client = user_client(server.base_url)
        token = client.headers["Authorization"].split()[1]
        with SearchLoad(server.base_url, token, clients=CLIENTS) as load:
            time.sleep(3)
            warm = (load.samples[0].end if load.samples else time.monotonic(), time.monotonic())
            down = time.monotonic()
            pg.stop()  # pg_ctl stop -m fast
            time.sleep(max(0.0, 5 - (time.monotonic() - down)))
            pg.start()
            up = time.monotonic()
            time.sleep(6)
        samples = list(load.samples)
        fig = figures(samples, warm, up)
        print(fig.describe())
        during = [s for s in samples if s.start >= down]
        assert any(s.status == 503 for s in during), "the outage produced no 503 at all"
        bad = _bad(samples, ANSWER_WITHIN)
        assert not bad, f"{len(bad)} requests were not a 200 or a prompt 503 with Retry-After, e.g. {bad[:3]}"
        late = [s for s in samples if s.start >= up + 3 and s.status != 200]
        assert not late, f"searches still failed 3 s after PostgreSQL was back: {late[:3]}"
        assert fig.first_ok_after_up is not None and fig.first_ok_after_up < 3, fig.describe()
        log = server.log()  # the server's own log says what happened, without a traceback per request
        assert "the database is unreachable" in log and "reachable again" in log, log[-3000:]
        assert "Traceback" not in log


def test_killed_embedded_postgres_is_restarted(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "home") as server:
        client = user_client(server.base_url)
        token = client.headers["Authorization"].split()[1]
        with SearchLoad(server.base_url, token, clients=4) as load:
            time.sleep(2)
            killed = time.monotonic()
            os.kill(postmaster_pid(server.pgdata), signal.SIGKILL)
            deadline = killed + 60
            while time.monotonic() < deadline:
                recent = [s for s in load.samples if s.start > killed + 0.5]
                if sum(1 for s in recent if s.status == 200) >= 20:
                    break
                time.sleep(0.5)
        samples = list(load.samples)
        after = [s for s in samples if s.start > killed + 0.5]
        assert sum(1 for s in after if s.status == 200) >= 20, (
            f"searches did not work again within 60 s of the kill; last: {samples[-3:]}\n{server.log()[-3000:]}"
        )
        bad = _bad(samples, ANSWER_WITHIN)
        assert not bad, f"{len(bad)} requests were not a 200 or a prompt 503 with Retry-After, e.g. {bad[:3]}"
        log = server.log()
        assert "restarted" in log and "embedded PostgreSQL" in log, log[-3000:]
        assert httpx.get(f"{server.base_url}/v3/health", timeout=10).status_code == 200
