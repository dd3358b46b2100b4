"""Invariants of the chunker, checked over real prose and reference text.

The corpus is every topic of the Python language reference shipped in the standard library
(``pydoc_data.topics``) plus the licence texts Debian installs; no text here was written
for the tests.
"""

from __future__ import annotations

import base64
import re
from itertools import pairwise
from pathlib import Path
from pydoc_data.topics import topics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragkeep.ingest.chunking import chunk_spans, chunk_text

LICENCES = {
    p.name: p.read_text(encoding="utf-8")
    for p in sorted(Path("/usr/share/common-licenses").glob("*"))
    if p.is_file() and not p.is_symlink()
}
CORPUS: dict[str, str] = {f"topic:{k}": v for k, v in topics.items()} | {
    f"licence:{k}": v for k, v in LICENCES.items()
}
# Prose with real paragraphs and sentences, whether or not the licences are installed.
PROSE = "\n\n".join(LICENCES.values()) or "\n\n".join(topics.values())
WORD = re.compile(r"\S+")
CJK_STOP = re.compile(r"[\u3002\uff01\uff1f]")
SIZES = [(800, 100), (300, 60), (120, 0), (200, 150), (50, 10)]


def check(text: str, chunk_size: int, overlap: int) -> list[tuple[int, int]]:
    """Assert every documented invariant and return the spans for further checks."""
    spans = chunk_spans(text, chunk_size, overlap)
    assert chunk_text(text, chunk_size, overlap) == [text[a:b] for a, b in spans]
    if not text.strip():
        assert spans == []
        return spans
    assert spans[0][0] == len(text) - len(text.lstrip())
    assert spans[-1][1] == len(text.rstrip())
    for a, b in spans:
        assert 0 <= a < b <= len(text)
        assert b - a <= chunk_size
        assert not text[a].isspace() and not text[b - 1].isspace()
    for (a, b), (c, d) in pairwise(spans):
        assert a < c and b < d, "chunks must make progress"
        if c >= b:  # no overlap: only whitespace may be skipped
            assert not text[b:c].strip()
        else:
            assert b - c <= overlap
            assert text[c - 1].isspace() or _in_long_word(text, c, chunk_size), "overlap starts at a word"
        if not text[b].isspace():  # a cut inside a word: a word longer than a chunk or CJK
            assert _in_long_word(text, b, chunk_size) or CJK_STOP.search(text, max(b - 5, 0), b)
    _check_words_covered(text, spans, chunk_size)
    return spans


def _in_long_word(text: str, pos: int, chunk_size: int) -> bool:
    start = pos
    while start and not text[start - 1].isspace():
        start -= 1
    m = WORD.match(text, start)
    return m is not None and len(m.group()) > chunk_size


def _check_words_covered(text: str, spans: list[tuple[int, int]], chunk_size: int) -> None:
    """Every word that fits in a chunk lies whole inside at least one chunk.

    CJK text has no spaces, so a CJK full stop inside a "word" is a sentence end to cut at.
    """
    i = 0
    for m in WORD.finditer(text):
        if len(m.group()) > chunk_size or CJK_STOP.search(m.group()[:-1]):
            continue
        while i < len(spans) and spans[i][1] < m.end():
            i += 1
        assert i < len(spans), f"word {m.group()!r} at {m.start()} is in no chunk"
        j = i
        while j < len(spans) and spans[j][0] <= m.start():
            if spans[j][1] >= m.end():
                break
            j += 1
        else:
            raise AssertionError(f"word {m.group()!r} at {m.start()} is in no chunk")
        assert spans[j][0] <= m.start()


@pytest.mark.parametrize(("chunk_size", "overlap"), SIZES)
def test_invariants_over_every_real_text(chunk_size: int, overlap: int) -> None:
    assert len(CORPUS) >= len(topics)
    for name, text in CORPUS.items():
        try:
            check(text, chunk_size, overlap)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from e


def test_every_word_of_every_topic_appears_in_a_chunk() -> None:
    for name, text in CORPUS.items():
        chunks = chunk_text(text)
        in_chunks = {w for c in chunks for w in c.split()}
        missing = set(text.split()) - in_chunks
        assert not missing, f"{name}: {sorted(missing)[:5]}"


def test_consecutive_chunks_share_about_overlap_characters() -> None:
    shared = []
    for text in CORPUS.values():
        spans = chunk_spans(text, 800, 100)
        for (_, b), (c, _) in pairwise(spans):
            shared.append(b - c)
            assert text[c:b] == text[c:b].strip()
    assert shared, "the corpus must be long enough to need several chunks"
    assert max(shared) <= 100
    # Taken at a word boundary, the overlap falls short of 100 by less than a word.
    assert sum(s >= 70 for s in shared) / len(shared) > 0.9


def test_no_overlap_when_overlap_is_zero() -> None:
    for text in CORPUS.values():
        spans = chunk_spans(text, 300, 0)
        assert all(c >= b for (_, b), (c, _) in pairwise(spans))


def _paragraphs(max_len: int) -> list[str]:
    texts = list(CORPUS.values())
    paras = [p.strip() for t in texts for p in re.split(r"\n\s*\n", t)]
    return [p for p in paras if p and len(p) <= max_len]


def test_paragraph_boundaries_are_preferred() -> None:
    # Paragraphs of at most a third of the room for new text always leave a paragraph end in
    # the second half of a chunk, so no chunk should end inside one.
    paras = _paragraphs(230)
    assert len(paras) > 100
    text = "\n\n".join(paras)
    ends = {m.start() for m in re.finditer(r"\n\n", text)}
    spans = check(text, 800, 100)
    assert len(spans) > 50
    for _, b in spans[:-1]:
        assert b in ends, f"cut inside a paragraph: {text[b - 40 : b + 40]!r}"


def test_a_short_heading_stays_with_its_section() -> None:
    body = " ".join(PROSE.split())[:5000]  # one long paragraph
    text = "Preamble\n\n" + body
    first = chunk_text(text, 800, 100)[0]
    assert first.startswith("Preamble\n\n") and len(first) > 400


def test_sentence_boundaries_are_preferred_inside_a_long_paragraph() -> None:
    sentences = [" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+", PROSE)]
    sentences = [s for s in sentences if 20 <= len(s) <= 300 and s[-1] in ".!?"]
    text = " ".join(sentences)  # a single paragraph
    spans = check(text, 800, 100)
    assert len(spans) > 20
    for _, b in spans[:-1]:
        end = text[max(b - 5, 0) : b]
        assert re.search(r"[.!?][\"'\u201d\u2019\u00bb)\]]*$", end), f"cut inside a sentence: {text[b - 40 : b + 10]!r}"


def test_word_boundaries_without_sentences() -> None:
    text = re.sub(r"[.!?]", "", " ".join(PROSE.split()))
    spans = check(text, 200, 40)
    for a, b in spans:
        assert a == 0 or text[a - 1] == " "
        assert b == len(text) or text[b] == " "


def test_only_words_longer_than_a_chunk_are_split() -> None:
    token = base64.b64encode(PROSE[:3000].encode()).decode()  # ~4000 characters, no spaces
    fitting = [token[:800], token[:790], token[:750], token[:701]]
    words = topics["assert"].split()
    parts = [*words[:60], fitting[0], *words[60:90], token, *words[90:150], *fitting[1:], *words[150:]]
    text = " ".join(parts)
    spans = check(text, 800, 100)
    chunks = [text[a:b] for a, b in spans]
    for word in fitting:
        assert any(word in c.split() for c in chunks), f"a {len(word)}-character word was split"
    start = text.index(token)
    stop = start + len(token)
    pieces = [(max(a, start), min(b, stop)) for a, b in spans if a < stop and b > start]
    covered = start
    for a, b in pieces:
        assert a <= covered
        covered = max(covered, b)
    assert covered == stop


def test_short_text_is_one_chunk_and_blank_text_none() -> None:
    text = "\n\n  " + topics["pass"].strip()[:700] + "  \n"
    assert chunk_text(text, 800, 100) == [text.strip()]
    assert chunk_text("", 800, 100) == []
    assert chunk_text(" \n\t\n\n ", 800, 100) == []


def test_deterministic() -> None:
    text = "\n\n".join(CORPUS.values())
    assert chunk_text(text, 500, 80) == chunk_text(text, 500, 80)


@pytest.mark.parametrize(("chunk_size", "overlap"), [(100, 100), (100, 150), (0, 0), (10, -1)])
def test_invalid_sizes_raise(chunk_size: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_text(PROSE, chunk_size, overlap)


def test_windows_line_endings_and_spaced_blank_lines() -> None:
    text = topics["while"].replace("\n", " \r\n")
    check(text, 200, 30)


def test_cjk_full_stops_are_sentence_ends() -> None:
    # Article 1 of the Universal Declaration of Human Rights in Chinese, repeated: no spaces.
    article = (
        "人人生而自由，在尊严和权利上一律平等。"
        "他们赋有理性和良心，并应以兄弟关系的精神相对待。"
    )
    text = article * 20
    spans = check(text, 100, 20)
    assert all(text[b - 1] == "。" for _, b in spans)


VOCABULARY = sorted({w for t in CORPUS.values() for w in t.split()})
SEPARATORS = [" ", " ", " ", "\n", "\n\n", "  \n \n", "\t", "\r\n", ". ", "\u3002"]


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(
        st.one_of(
            st.sampled_from(VOCABULARY),
            st.sampled_from(SEPARATORS),
            st.integers(1, 300).map(lambda n: PROSE.replace(" ", "").replace("\n", "")[:n]),
        ),
        max_size=400,
    ),
    chunk_size=st.integers(1, 400),
    overlap_fraction=st.floats(0, 0.99),
)
def test_invariants_hold_for_arbitrary_mixtures(
    parts: list[str], chunk_size: int, overlap_fraction: float
) -> None:
    overlap = min(int(chunk_size * overlap_fraction), chunk_size - 1)
    check("".join(parts), chunk_size, overlap)
