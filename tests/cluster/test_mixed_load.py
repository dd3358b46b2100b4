"""Mixed load through HAProxy while one replica is SIGKILLed and another restarted with SIGTERM.

Several users (R2R's client and ours) upload and search at once for ``LOAD_SECONDS``: synchronous
``raw_text`` uploads and files above ``background_threshold_bytes`` (answered 202, ingested in
the background). Meanwhile replica 0 is killed with a background upload of its own in flight,
replica 1 is restarted (SIGTERM, then started again on its port), and replica 0 comes back.

A client retries a search once after a 502/503 or no answer (``retry_once``): searches change
nothing, so that is safe; uploads are not retried (a client cannot know whether one that got
no answer was stored). Afterwards:

- no search failed after that one retry;
- every acknowledged upload is there with all its chunks: a synchronous one ``success`` with
  as many chunks as a re-chunk of its text gives; a background one the same, or ``failed`` with
  no chunk (the killed replica's, failed by the lease sweeper of another replica);
- no document of any user is half-written: ``success`` with ``chunk_count`` chunks listed, or
  ``failed`` with none.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ragkeep.client import Client
from ragkeep.embeddings.tokenizer import minilm_tokenizer
from ragkeep.ingest.chunking import TokenChunker
from tests.cluster.users import User, register
from tests.support.cluster import Cluster, wait_for
from tests.texts import TOPICS, paragraphs

pytestmark = [pytest.mark.db, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

BACKGROUND_THRESHOLD = 4096
CLUSTER_SETTINGS = {"ingestion": {"background_threshold_bytes": BACKGROUND_THRESHOLD}}
LOAD_SECONDS = 24.0
#: When, from the load's start, replica 0 is killed, replica 1 restarted, replica 0 started again.
KILL_AT, RESTART_AT, REVIVE_AT = 5.0, 10.0, 17.0
#: The server's chunking of raw text (defaults: 256 tokens of all-MiniLM-L6-v2, 32 overlap).
CHUNKER = TokenChunker(minilm_tokenizer(), 256, 32)
TOPIC_NAMES = sorted(name for name, text in TOPICS.items() if len(text) > 3000)


@dataclass
class Upload:
    user: User
    document_id: str
    text: str
    background: bool


@dataclass
class Record:
    """What the load saw, filled from several threads (list.append is atomic)."""

    uploads: list[Upload] = field(default_factory=list)
    upload_errors: list[str] = field(default_factory=list)
    searches: list[int] = field(default_factory=list)  # retries used by each search that answered
    search_failures: list[str] = field(default_factory=list)


def unique_text(n: int, size: int) -> str:
    """About ``size`` characters of reference text, made unique by a marker line."""
    name = TOPIC_NAMES[n % len(TOPIC_NAMES)]
    body = TOPICS[name] if size > 2000 else paragraphs(name, 3)
    while len(body) < size:
        body += "\n\n" + TOPICS[TOPIC_NAMES[(n + len(body)) % len(TOPIC_NAMES)]]
    return f"Marker {uuid.uuid4().hex}.\n\n{body[:size]}"


def uploader(user: User, record: Record, stop: threading.Event, folder: Path, files: bool) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        background = files and n % 3 == 0
        text = unique_text(n, 12_000 if background else 1500)
        try:
            if background:
                path = folder / f"{user.kind}-{n}-{uuid.uuid4().hex[:6]}.txt"
                path.write_text(text, encoding="utf-8")
                _, doc = user.upload_file(path)
            else:
                _, doc = user.upload_text(text)
        except Exception as e:  # not acknowledged: nothing to check but "no half-written document"
            record.upload_errors.append(f"{user.kind} upload: {type(e).__name__}: {e}")
        else:
            record.uploads.append(Upload(user, doc, text, background))
        stop.wait(0.3)


def searcher(user: User, record: Record, stop: threading.Event) -> None:
    queries = ["how are exceptions raised", "the with statement context manager", "class definitions",
               "integer literals", "lambda expressions"]
    n = 0
    while not stop.is_set():
        n += 1
        try:
            _, retries = user.search_retrying(queries[n % len(queries)])
        except Exception as e:
            record.search_failures.append(f"{user.kind} search #{n}: {type(e).__name__}: {e}")
        else:
            record.searches.append(retries)
        stop.wait(0.05)


@dataclass
class Chaos:
    """What the chaos thread did: its steps, and the upload it left in flight on the killed replica."""

    steps: list[str] = field(default_factory=list)
    doomed: User | None = None
    doomed_document: str = ""


def chaos(c: Cluster, stop: threading.Event, started: float, done: Chaos, tmp_path: Path) -> None:
    def at(offset: float) -> bool:
        return not stop.wait(max(0.0, started + offset - time.monotonic()))

    if not at(KILL_AT):
        return
    # A background upload sent straight to replica 0, then the kill: it is in flight there
    # (200 kB of text is minutes of embedding on one thread, the kill follows its 202 at once).
    big = tmp_path / "in-flight.txt"
    big.write_text(unique_text(999, 200_000), encoding="utf-8")
    done.doomed = register(c.base_url, "ragkeep", "doomed")
    direct = Client(c.replicas[0].base_url, email=done.doomed.email, password=done.doomed.password, timeout=60)
    done.doomed_document = str(direct.documents.create(file_path=big)["results"]["document_id"])
    direct.close()
    c.kill(0)
    done.steps.append("SIGKILL r1")
    if not at(RESTART_AT):
        return
    code = c.restart(1)
    done.steps.append(f"SIGTERM r2 (exit {code}), started again")
    if not at(REVIVE_AT):
        return
    c.start(0)
    done.steps.append("r1 started again")


def chunks_listed(client: Client, document_id: str) -> int:
    return int(client.documents.list_chunks(document_id, limit=1)["total_entries"])


def test_mixed_load_with_a_replica_killed_and_another_restarted(lb: Cluster, tmp_path: Path) -> None:
    users = [register(lb.base_url, kind, f"load-{kind}") for kind in ("r2r", "ragkeep", "r2r", "ragkeep")]
    # Something to find from the start.
    for n, u in enumerate(users):
        u.upload_text(unique_text(100 + n, 1500))
    record, stop, done = Record(), threading.Event(), Chaos()
    threads = [threading.Thread(target=uploader, args=(u, record, stop, tmp_path, n < 2), daemon=True)
               for n, u in enumerate(users)]
    threads += [threading.Thread(target=searcher, args=(u, record, stop), daemon=True) for u in users]
    started = time.monotonic()
    chaos_thread = threading.Thread(target=chaos, args=(lb, stop, started, done, tmp_path), daemon=True)
    for t in [*threads, chaos_thread]:
        t.start()
    try:
        time.sleep(LOAD_SECONDS)
    finally:
        stop.set()
        for t in threads:
            t.join(150)
        chaos_thread.join(200)
    lb.heal()
    print(f"\nchaos: {done.steps}; searches {len(record.searches)} "
          f"(retried {sum(record.searches)}), uploads acknowledged {len(record.uploads)} "
          f"(background {sum(u.background for u in record.uploads)}), upload errors {len(record.upload_errors)}: "
          f"{record.upload_errors[:3]}")

    assert len(done.steps) == 3, done.steps  # every step of the chaos ran
    assert not record.search_failures, record.search_failures
    assert len(record.searches) >= 40
    assert any(u.background for u in record.uploads) and any(not u.background for u in record.uploads)

    # The killed replica's in-flight upload is failed by another replica's lease sweeper.
    assert done.doomed is not None
    doomed = done.doomed.client
    wait_for(lambda: doomed.documents.retrieve(done.doomed_document)["results"]["ingestion_status"]
             in ("success", "failed"), "the killed replica's upload swept", timeout=60)
    swept = doomed.documents.retrieve(done.doomed_document)["results"]
    assert swept["ingestion_status"] == "failed" and swept["error"], swept
    assert chunks_listed(doomed, done.doomed_document) == 0
    done.doomed.close()

    # Every background upload finishes (or is failed); then the standby has it all.
    readers = {u.email: Client(lb.base_url, email=u.email, password=u.password, timeout=60) for u in users}

    def settled() -> bool:
        for u in record.uploads:
            status = readers[u.user.email].documents.retrieve(u.document_id)["results"]["ingestion_status"]
            if status not in ("success", "failed"):
                return False
        return True

    wait_for(settled, "every acknowledged upload finished or failed", timeout=120, every=0.5)
    lb.wait_replayed()

    for u in record.uploads:
        client = readers[u.user.email]
        doc = client.documents.retrieve(u.document_id)["results"]
        listed = chunks_listed(client, u.document_id)
        expected = len(CHUNKER.chunks(u.text))
        if not u.background:
            assert doc["ingestion_status"] == "success", doc
            assert doc["chunk_count"] == expected == listed, (doc, expected, listed)
        elif doc["ingestion_status"] == "success":  # a .txt file is its text: the same chunks
            assert doc["chunk_count"] == expected == listed, (doc, expected, listed)
        else:
            assert listed == 0, (doc, listed)
    assert any(u.background for u in record.uploads
               if readers[u.user.email].documents.retrieve(u.document_id)["results"]["ingestion_status"] == "success")

    # No document of any user half-written, acknowledged or not.
    for u in users:
        client = readers[u.email]
        page = client.documents.list(limit=1000, owner_only=True)
        assert page["total_entries"] == len(page["results"])
        for doc in page["results"]:
            listed = chunks_listed(client, doc["id"])
            if doc["ingestion_status"] == "success":
                assert doc["chunk_count"] == listed >= 1, (doc, listed)
            else:
                assert doc["ingestion_status"] == "failed" and listed == 0, (doc, listed)
    for client in readers.values():
        client.close()
    for u in users:
        u.close()
