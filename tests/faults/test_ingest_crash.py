"""Finding 4 of issue 10: a replica killed mid-ingestion must not leave its documents blocking.

Two real ``ragkeep serve`` processes share one database. Replica A is ``kill -9``-ed while it
embeds two large background uploads; replica B, alive, must fail both (its periodic sweeper
sees that A's lease lock is gone) and accept the same content again at once (no 409), well
before the old 15-minute rule would have. A stuck row whose replica is alive still blocks.
"""

from __future__ import annotations

import random
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support import create_database, drop_database, login, wait_for
from tests.support.replicas import replicas

WORDS = [
    "river", "mountain", "ledger", "protocol", "harbour", "quantum", "lattice", "meadow", "copper",
    "signal", "archive", "lantern", "orbit", "cedar", "vessel", "thunder", "granite", "saffron",
    "beacon", "tundra", "glacier", "prism", "falcon", "ember", "canyon",
]


def prose(seed: int, size: int) -> bytes:
    """Distinct text of about ``size`` bytes in paragraphs (many chunks: minutes of embedding)."""
    rnd = random.Random(seed)
    out: list[str] = []
    total = 0
    while total < size:
        para = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(40, 90))) + "."
        out.append(para)
        total += len(para) + 2
    return "\n\n".join(out).encode()


def status(client: httpx.Client, doc_id: str) -> dict:
    r = client.get(f"/v3/documents/{doc_id}")
    assert r.status_code == 200, r.text
    return r.json()["results"]

@pytest.fixture
def shared_db(pg_url: str) -> Iterator[str]:
    url = create_database(pg_url, "crash")
    yield url
    drop_database(pg_url, url)


def test_kill_9_mid_ingestion_is_swept_by_the_surviving_replica(shared_db: str, tmp_path: Path) -> None:
    with replicas(shared_db, tmp_path, 2, {"sweep_seconds": 2}) as (a, b):
        email = f"crash-{uuid.uuid4().hex[:8]}@ragkeep.test"
        r = httpx.post(f"{a.base_url}/v3/users", json={"email": email, "password": "pw-crash-test-1"})
        assert r.status_code in (200, 201), r.text
        on_a = login(a.base_url, email, "pw-crash-test-1")
        on_b = login(b.base_url, email, "pw-crash-test-1")
        first, second = prose(1, 400_000), prose(2, 400_000)
        ids = []
        for n, content in enumerate((first, second)):
            r = on_a.post("/v3/documents", files={"file": (f"big{n}.txt", content, "text/plain")})
            assert r.status_code == 202, r.text
            ids.append(r.json()["results"]["document_id"])
        wait_for(lambda: status(on_b, ids[0])["ingestion_status"] == "embedding", "A to start embedding", timeout=120)

        a.process.kill()  # kill -9: no shutdown code runs
        a.process.wait(30)

        # The same content again, on the surviving replica, at once: accepted, not a 409.
        r = on_b.post("/v3/documents", files={"file": ("big0-again.txt", first, "text/plain")})
        assert r.status_code == 202, f"re-upload of a crashed document's content refused: {r.status_code} {r.text}"
        assert status(on_b, ids[0])["ingestion_status"] == "failed"

        # The other document, never re-uploaded, is failed by B's sweeper within a bounded wait.
        wait_for(lambda: status(on_b, ids[1])["ingestion_status"] == "failed", "the sweeper to fail it", timeout=60)
        assert "interrupted" in status(on_b, ids[1])["error"]
        r = on_b.post("/v3/documents", files={"file": ("big1-again.txt", second, "text/plain")})
        assert r.status_code == 202, r.text
        on_a.close()
        on_b.close()


def _has_lease_column(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = 'documents' AND column_name = 'ingest_lease'"
    ).fetchone()
    return row is not None


def test_a_stuck_row_blocks_only_while_its_replica_lives(server, make_user, settings) -> None:  # type: ignore[no-untyped-def]
    """Duplicates look through a document whose replica is gone (its lease lock is free), but not
    through one whose replica holds its lock: liveness, not age, decides."""
    try:
        from ragkeep.ingest.liveness import LEASE_CLASS
    except ImportError:  # the code before leases (the test then shows the row blocking forever)
        LEASE_CLASS = 0x72676B69

    user = make_user("stuck")
    url = server.services.db.url
    texts = [f"stuck document {n} {uuid.uuid4().hex}" for n in range(2)]
    ids = []
    for text in texts:
        r = user.client.post("/v3/documents", files={"raw_text": (None, text)})
        assert r.status_code in (200, 201), r.text
        ids.append(r.json()["results"]["document_id"])
    with psycopg.connect(url, autocommit=True) as holder, psycopg.connect(url, autocommit=True) as conn:
        live_key, dead_key = (secrets.randbelow(2**30) + 1 for _ in range(2))
        assert holder.execute("SELECT pg_try_advisory_lock(%s, %s)", (LEASE_CLASS, live_key)).fetchone()[0]
        # Both rows put back in flight, as a replica killed while embedding leaves them.
        lease = _has_lease_column(conn)
        for doc_id, key in zip(ids, (live_key, dead_key), strict=True):
            if lease:
                conn.execute(
                    "UPDATE documents SET ingestion_status = 'embedding', ingest_lease = %s WHERE id = %s",
                    (key, doc_id),
                )
            else:  # the code before leases: a fresh row in flight
                conn.execute("UPDATE documents SET ingestion_status = 'embedding' WHERE id = %s", (doc_id,))
        alive = user.client.post("/v3/documents", files={"raw_text": (None, texts[0])})
        dead = user.client.post("/v3/documents", files={"raw_text": (None, texts[1])})
    assert alive.status_code == 409, alive.text  # its replica lives: still being ingested
    assert dead.status_code in (200, 201), f"a dead replica's document blocked its content: {dead.text}"
    assert user.client.get(f"/v3/documents/{ids[1]}").json()["results"]["ingestion_status"] == "failed"
