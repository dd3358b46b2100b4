"""Token-aware chunking with all-MiniLM-L6-v2's own tokenizer, on real text.

Every chunk must fit the model's window when tokenised *alone* (that is what the model sees),
be a verbatim slice of the text, and the chunks together must cover every word. The texts are
the Python reference topics (``pydoc_data.topics``) and the licences Debian installs; nobody
here wrote them.
"""

from __future__ import annotations

import hashlib
import re
from itertools import pairwise
from pathlib import Path
from pydoc_data.topics import topics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from ragkeep.config import ConfigError, IngestionConfig
from ragkeep.embeddings.tokenizer import minilm_tokenizer
from ragkeep.ingest import chunking
from ragkeep.ingest.chunking import TokenChunker

TOKENIZER = minilm_tokenizer()
LICENCES = [
    p.read_text(encoding="utf-8")
    for p in sorted(Path("/usr/share/common-licenses").glob("*"))
    if p.is_file() and not p.is_symlink()
]
LONG_TEXTS = [*LICENCES, "\n\n".join(v for _, v in sorted(topics.items()))]
WORD = re.compile(r"\S+")


def tokens(text: str) -> int:
    """The model-input length of ``text`` alone, [CLS] and [SEP] included."""
    return len(TOKENIZER.encode(text).ids)


def check(chunker: TokenChunker, text: str) -> list[tuple[int, int]]:
    plan = chunker.plan(text)
    spans = [span for span, _ in plan]
    assert spans == chunker.spans(text)
    if not text.strip():
        assert spans == []
        return spans
    for (a, b), ids in plan:
        assert 0 <= a < b <= len(text)
        piece = text[a:b]
        assert piece.strip() == piece, "chunks start and end on text"
        alone = TOKENIZER.encode(piece).ids
        # The ids handed to the model are the chunk's own tokenisation, not the plan's guess.
        assert ids == alone, f"ids differ for {piece[:80]!r}"
        n = len(alone)
        assert n <= chunker.chunk_size, f"{n} tokens > {chunker.chunk_size}: {piece[:80]!r}"
    for (a, b), (c, d) in pairwise(spans):
        assert a < c and b <= d, "chunks make progress"
    # Every word is inside some chunk (a word longer than a chunk may be spread over several).
    covered = 0
    for m in WORD.finditer(text):
        while covered < len(spans) and spans[covered][1] <= m.start():
            covered += 1
        assert covered < len(spans) and spans[covered][0] <= m.start(), f"word lost: {m.group()[:40]!r}"
    return spans


@pytest.mark.parametrize(("chunk_size", "overlap"), [(256, 32), (128, 16), (64, 0), (32, 8)])
def test_long_real_documents_fit_the_window(chunk_size: int, overlap: int) -> None:
    chunker = TokenChunker(TOKENIZER, chunk_size, overlap)
    total = 0
    for text in LONG_TEXTS:
        spans = check(chunker, text)
        total += len(spans)
        sizes = [tokens(text[a:b]) for a, b in spans]
        # Chunks are filled, not timid: at least half of them use more than half the window.
        assert sorted(sizes)[len(sizes) // 2] > chunk_size // 2 or len(sizes) < 3
    assert total > 50


def test_the_plan_is_exact_for_whitespace_cuts() -> None:
    """The chunker skips re-tokenising chunks cut at whitespace, on the claim that BERT's
    tokenisation of such a slice equals its tokens inside the whole text. Re-check all of them."""
    fast = TokenChunker(TOKENIZER, 128, 16)
    careful = TokenChunker(TOKENIZER, 128, 16)
    careful.whitespace_safe = False  # verify every chunk
    for text in LONG_TEXTS:
        assert fast.spans(text) == careful.spans(text)


def test_overlap_is_at_most_the_setting_in_tokens() -> None:
    chunker = TokenChunker(TOKENIZER, 128, 24)
    text = LICENCES[0] if LICENCES else topics["assignment"]
    spans = check(chunker, text)
    overlapping = 0
    for (_, b), (c, _) in pairwise(spans):
        if c < b:
            overlapping += 1
            assert len(TOKENIZER.encode(text[c:b], add_special_tokens=False).ids) <= 24
            assert text[c - 1].isspace(), "the overlap starts at a word"
    assert overlapping > len(spans) // 2


def test_paragraphs_are_preferred() -> None:
    paras = [" ".join(p.split()) for t in LONG_TEXTS for p in re.split(r"\n\s*\n", t)]
    paras = [p for p in paras if 20 < len(p) < 300]  # each far below the window
    text = "\n\n".join(paras[:300])
    ends = {m.start() for m in re.finditer(r"\n\n", text)}
    spans = check(TokenChunker(TOKENIZER, 256, 0), text)
    assert len(spans) > 10
    for _, b in spans[:-1]:
        assert b in ends, f"cut inside a paragraph: {text[b - 40 : b + 40]!r}"


def test_sentences_are_preferred_inside_a_long_paragraph() -> None:
    sentences = [" ".join(s.split()) for t in LONG_TEXTS for s in re.split(r"(?<=[.!?])\s+", t)]
    text = " ".join(s for s in sentences if 20 <= len(s) <= 200 and s[-1] in ".!?")
    spans = check(TokenChunker(TOKENIZER, 128, 16), text[:60_000])
    for _, b in spans[:-1]:
        assert re.search(r"[.!?][\"'\u201d\u2019\u00bb)\]]*$", text[max(b - 5, 0) : b]), text[b - 40 : b + 10]


def test_words_of_many_pieces_are_split_between_pieces() -> None:
    # Hex digests: under BERT's 100-character word limit, yet many word pieces each.
    digest = hashlib.sha512(topics["pass"].encode()).hexdigest()[:96]
    assert tokens(digest) > 40
    text = " ".join([digest] * 6 + topics["pass"].split()[:40] + [digest] * 3)
    check(TokenChunker(TOKENIZER, 16, 4), text)  # a 14-token budget: every digest is cut


def test_cjk_text_without_spaces() -> None:
    article = "人人生而自由，在尊严和权利上一律平等。他们赋有理性和良心，并应以兄弟关系的精神相对待。"
    spans = check(TokenChunker(TOKENIZER, 32, 4), article * 20)
    assert all((article * 20)[b - 1] == "。" for _, b in spans[:-1])


def test_long_texts_are_planned_in_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunking, "SEGMENT", 3000)
    text = LONG_TEXTS[-1][:40_000]
    check(TokenChunker(TOKENIZER, 128, 16), text)


def test_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="special tokens"):
        TokenChunker(TOKENIZER, 2, 0)
    with pytest.raises(ValueError, match="overlap"):
        TokenChunker(TOKENIZER, 64, 62)


def test_chunk_size_defaults_to_the_window_and_may_not_exceed_it() -> None:
    assert IngestionConfig().chunk_tokens(256) == 256
    assert IngestionConfig().chunk_tokens(128) == 128
    assert IngestionConfig().chunk_tokens(8191) == 256
    assert IngestionConfig(chunk_size=200).chunk_tokens(256) == 200
    with pytest.raises(ConfigError, match=r"ingestion.chunk_size .300 tokens. is larger than .* 256"):
        IngestionConfig(chunk_size=300).chunk_tokens(256)


VOCABULARY = sorted({w for t in LONG_TEXTS for w in t.split()})[:5000]
ODD = ["\u2028", "\x1c", "\x85", "\u00a0", "\u3000", "\u200b", "é", "ﬁ", "\t", "\r\n", "\n\n", ". ", "。", "x" * 120]


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(
        st.one_of(st.sampled_from(VOCABULARY), st.sampled_from([" ", " ", "\n"]), st.sampled_from(ODD)), max_size=300
    ),
    chunk_size=st.integers(8, 64),
    overlap_fraction=st.floats(0, 0.9),
)
def test_invariants_hold_for_arbitrary_mixtures(parts: list[str], chunk_size: int, overlap_fraction: float) -> None:
    budget = chunk_size - 2
    overlap = min(int(budget * overlap_fraction), budget - 1)
    text = "".join(parts)
    # check() re-tokenises every chunk: separators that BERT does not treat as spaces (or
    # deletes) must not fool the shortcut that skips that for whitespace cuts.
    check(TokenChunker(TOKENIZER, chunk_size, overlap), text)


def _context_sensitive_tokenizer() -> Tokenizer:
    """A tiny real WordPiece tokenizer in which a word's tail tokenises longer alone than inside
    the word ("abcdefghij" is 2 pieces; "ghij" alone is 4), as happens with real vocabularies."""
    letters = "abcdefghij"
    vocab = ["[UNK]", "[CLS]", "[SEP]", "abcdef", "##ghij", *letters, *(f"##{c}" for c in letters)]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    return tok


def test_a_slice_that_tokenises_longer_alone_is_cut_again() -> None:
    tok = _context_sensitive_tokenizer()
    # Each word: abcdef ##ghij ##a ... ##f ##ghij ##a ... = 22 pieces; 8 of text fit a chunk, so
    # the second chunk of a word starts at "##ghij", which alone is "g ##h ##i ##j".
    text = " ".join(["abcdefghij" * 3] * 4)
    planned = chunking.chunk_spans(text, 8, 0, chunking.TokenRuler(text, tok))
    assert any(len(tok.encode(text[a:b]).ids) > 10 for a, b in planned), "the plan alone would overflow"
    chunker = TokenChunker(tok, 10, 0)
    spans = chunker.spans(text)
    texts, ids = chunker.chunks_with_ids(text)
    assert ids == [tok.encode(t).ids for t in texts]
    assert "".join(text[a:b] for a, b in spans).replace(" ", "") == text.replace(" ", "")
    sizes = [len(tok.encode(text[a:b]).ids) for a, b in spans]
    assert max(sizes) <= 10, sizes
