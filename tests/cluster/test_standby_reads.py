"""Reads on the streaming standby across the cluster, through HAProxy.

- Read-your-writes across processes: with the standby's replay paused, a user's upload is in
  that user's next search whichever replica serves it (each of the three serves some), while the
  standby stays in rotation (``max_replica_lag_seconds`` is large here) and other users' reads
  keep answering on it.
- The standby stopped with ``ragkeep db stop``: searches keep answering, none fails; started again
  with ``ragkeep db start`` it is still a standby, and every replica puts it back in rotation and
  reads on it.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.cluster.users import register
from tests.support.cluster import Cluster, wait_for

pytestmark = [pytest.mark.db, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

#: A paused standby stays in rotation (its lag stays under a minute): only read-your-writes keeps
#: a writer's reads off it.
CLUSTER_SETTINGS = {"database": {"max_replica_lag_seconds": 60.0}}
SEARCH_ROUTE = "/v3/retrieval/search"


def searches_served(c: Cluster) -> list[float]:
    return [c.metrics(r.index).get("ragkeep_http_requests_total", route=SEARCH_ROUTE) for r in c.replicas]


def standby_reads(c: Cluster) -> list[float]:
    out = []
    for r in c.replicas:
        m = c.metrics(r.index)
        out.append(sum(v for labels, v in m.series("ragkeep_reads_total").items()
                       if ("target", "primary") not in labels))
    return out


def primary_reads(c: Cluster) -> float:
    return sum(c.metrics(r.index).get("ragkeep_reads_total", target="primary") for r in c.replicas)


def on_standby(c: Cluster, document_id: str) -> bool:
    assert c.standby_url is not None
    with psycopg.connect(c.standby_url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM documents WHERE id = %s", (document_id,)).fetchone() is not None


def test_a_users_upload_is_in_their_next_search_on_every_replica_while_replay_is_paused(lb: Cluster) -> None:
    writer = register(lb.base_url, "ragkeep", "writer")
    other = register(lb.base_url, "r2r", "other")
    theirs = other.upload_text(f"Marker {uuid.uuid4().hex}. Narwhals use their tusks to sense the water.")[1]
    lb.wait_replayed()  # both users' writes so far are on the standby: their reads may go there
    lb.pause_replay()
    try:
        served_by = [0] * len(lb.replicas)
        standby_before = standby_reads(lb)
        rounds = 0
        while min(served_by) < 2:
            rounds += 1
            assert rounds <= 30, f"HAProxy did not spread 30 searches over every replica: {served_by}"
            word = uuid.uuid4().hex
            doc = writer.upload_text(f"Marker {word}. The lighthouse keeper logs the tide at dawn, round {rounds}.")[1]
            assert not on_standby(lb, doc)  # replay is paused: a read there would miss it
            before = searches_served(lb)
            hits = writer.search(f"lighthouse keeper logs the tide, round {rounds}", limit=50)
            after = searches_served(lb)
            assert doc in hits, f"round {rounds}: the writer's upload {doc} is not in their next search"
            served = [n for n, (a, b) in enumerate(zip(before, after, strict=True)) if b > a]
            assert len(served) == 1, (before, after)
            served_by[served[0]] += 1
            # Another user reads meanwhile (on the standby: their data is there) and never sees it;
            # once or twice a round, so that HAProxy's turns do not always give the writer the
            # same replica (leastconn takes turns between idle servers).
            for _ in range(1 + rounds % 2):
                other_hits = other.search("narwhal tusks", limit=50)
                assert theirs in other_hits and doc not in other_hits
        # The standby served reads all along: it was in rotation, behind the writer.
        assert all(lb.standby_in_rotation(r.index) for r in lb.replicas)
        assert sum(standby_reads(lb)) > sum(standby_before)
        print(f"\nwriter's searches per replica: {served_by}; standby reads {standby_before} -> {standby_reads(lb)}")
    finally:
        lb.resume_replay()
        writer.close()
        other.close()


def test_a_stopped_standby_fails_no_search_and_is_used_again_once_started(lb: Cluster) -> None:
    user = register(lb.base_url, "r2r", "survivor")
    doc = user.upload_text(f"Marker {uuid.uuid4().hex}. Tardigrades survive desiccation as cryptobiosis.")[1]
    lb.wait_replayed()
    lb.stop_standby()
    try:
        on_primary = primary_reads(lb)
        for _ in range(20):  # from the first request after the stop: never a failure, no retry
            assert doc in user.search("tardigrade cryptobiosis")
        wait_for(lambda: not any(lb.standby_in_rotation(r.index) for r in lb.replicas),
                 "the stopped standby out of rotation on every replica")
        for _ in range(10):
            assert doc in user.search("tardigrade cryptobiosis")
        assert primary_reads(lb) >= on_primary + 30  # every one of them read on the primary
    finally:
        out = lb.start_standby()
    assert "hot standby" in out, out
    assert lb.standby_is_in_recovery()
    wait_for(lambda: all(lb.standby_in_rotation(r.index) for r in lb.replicas),
             "the restarted standby back in rotation on every replica")
    lb.wait_replayed()
    # Back in use: every replica reads on it again.
    before = standby_reads(lb)
    rounds = 0
    while not all(b > a for a, b in zip(before, standby_reads(lb), strict=True)):
        rounds += 1
        assert rounds <= 30, f"not every replica read on the restarted standby: {before} -> {standby_reads(lb)}"
        assert doc in user.search("tardigrade cryptobiosis")
    user.close()
