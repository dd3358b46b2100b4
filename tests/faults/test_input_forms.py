"""Large url-encoded forms are decoded in slices between which the event loop runs other requests
(``api/guard.py``); the slices must decode to exactly what Starlette's one-piece decoding gives."""

from __future__ import annotations

import random
import uuid
from urllib.parse import unquote_plus

from ragkeep.api.guard import FORM_SLICE, form_slices

PIECES = ["%", "%C3", "%A9", "%E2%82%AC", "a", "+", "%2", "%zz", "é", "%F0%9F%98%80", "%8", "%B", "€", "%41",
          "%c3%a9", "%e2", "%82", "%00", "="]


def test_slices_decode_as_the_whole() -> None:
    rng = random.Random(10)
    for _ in range(5_000):
        s = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 40)))
        for size in (1, 3, 7):
            assert "".join(unquote_plus(p) for p in form_slices(s, size)) == unquote_plus(s), (s, size)


def test_large_url_encoded_upload_round_trips(make_user) -> None:
    """Non-Latin text is all %XX escapes: the sliced path, end to end."""
    user = make_user("forms")
    text = ("Съешь же ещё этих мягких французских булок, да выпей чаю. " * 1200) + uuid.uuid4().hex
    assert len(text.encode()) * 3 > 2 * FORM_SLICE
    r = user.client.post("/v3/documents", data={"raw_text": text, "metadata": '{"lang": "ру"}'})
    assert r.status_code == 201, r.text
    doc_id = r.json()["results"]["document_id"]
    doc = user.client.get(f"/v3/documents/{doc_id}").json()["results"]
    assert doc["metadata"]["lang"] == "ру"
    r = user.client.post("/v3/documents", data={"raw_text": text, "metadata": '{"a": NaN}'})
    assert r.status_code == 422, r.text
