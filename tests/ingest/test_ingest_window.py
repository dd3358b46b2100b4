"""Through the API: long real documents become chunks that fit the model's window, and each stored
chunk's vector is the model's vector of exactly the stored text (nothing was cut before embedding).
"""

from __future__ import annotations

import json
from pathlib import Path
from pydoc_data.topics import topics
from typing import Any

import numpy as np

from ragkeep.embeddings.tokenizer import minilm_tokenizer
from tests.support import ServerThread

TOKENIZER = minilm_tokenizer()
GPL = Path("/usr/share/common-licenses/GPL-3")
LONG_DOCUMENTS = {
    "reference.txt": "\n\n".join(
        topics[k] for k in ("assignment", "compound", "exprlists", "formatstrings", "typesseq")
    ),
    "licence.txt": GPL.read_text(encoding="utf-8") if GPL.is_file() else topics["datamodel"],
}


def chunks_of(user: Any, document_id: str) -> list[dict]:
    r = user.client.get(f"/v3/documents/{document_id}/chunks", params={"limit": 1000, "include_vectors": "true"})
    r.raise_for_status()
    return r.json()["results"]


def test_long_documents_fit_the_window_and_store_what_was_embedded(server: ServerThread, make_user) -> None:  # type: ignore[no-untyped-def]
    user = make_user("window")
    embedder = server.services.embedder
    window = embedder.max_tokens
    for name, text in LONG_DOCUMENTS.items():
        assert len(TOKENIZER.encode(text).ids) > 4 * window  # long enough to need many chunks
        r = user.client.post("/v3/documents", files={"file": (name, text.encode(), "text/plain")})
        assert r.status_code == 201, r.text
        chunks = chunks_of(user, r.json()["results"]["document_id"])
        assert len(chunks) >= 4
        texts = [c["text"] for c in chunks]
        counts = [len(e.ids) for e in TOKENIZER.encode_batch(texts)]
        assert max(counts) <= window, f"{name}: a chunk of {max(counts)} tokens"
        assert sorted(counts)[len(counts) // 2] > window // 2, "chunks are filled"
        # The stored vector is the model's vector of the stored text, computed again here.
        stored = np.asarray([c["vector"] for c in chunks], dtype=np.float32)
        again = embedder.embed_sync(texts)
        assert np.all(np.sum(stored * again, axis=1) > 0.9999)
        # Every word of the document is in some chunk, in order.
        words = text.split()
        joined = " ".join(" ".join(t.split()) for t in texts)
        assert all(w in joined for w in words[:: max(len(words) // 200, 1)])


def test_ready_made_chunks_beyond_the_window_are_refused(server: ServerThread, make_user) -> None:  # type: ignore[no-untyped-def]
    user = make_user("window")
    long_chunk = topics["assignment"][:6000]
    short = topics["pass"][:300]
    r = user.client.post("/v3/documents", data={"chunks": json.dumps([short, long_chunk])})
    assert r.status_code == 422, r.text
    message = r.json().get("detail", r.text)
    assert "chunks[1]" in str(message) and "256" in str(message)
    # Nothing was stored.
    listed = user.client.get("/v3/documents").json()["results"]
    assert listed == []
    # With its own vector the chunk is the caller's business: accepted.
    vector = [1.0] + [0.0] * 383
    r = user.client.post(
        "/v3/documents", data={"chunks": json.dumps([{"text": long_chunk, "embedding": vector}])}
    )
    assert r.status_code == 201, r.text
