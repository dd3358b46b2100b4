"""Split text into overlapping chunks measured in characters or in an embedding model's tokens.

Each chunk is cut at the strongest boundary that still fills at least half of the room it
has for new text: a paragraph break, else a sentence end, else a word end. The half-room
rule keeps a short heading with the section it introduces instead of emitting it alone,
while text made of short paragraphs is never cut mid-paragraph. A word is split only
when it is longer than a chunk on its own.

Every chunk is a verbatim slice of the input (see :func:`chunk_spans`), so a chunk can be
mapped back to its character offsets, and the next chunk starts at a word boundary within
the last ``overlap`` units of the previous one, giving the embedder some context.

The unit is a *ruler*: characters (:class:`CharRuler`), or the tokens of the embedding model's
own tokenizer (:class:`TokenChunker`). Sizes in tokens are what matters for embedding: a model
reads a fixed window of tokens and silently drops the rest, so a chunk sized in characters can
lose its tail (R2R's 1,024-character chunks overflow MiniLM's 256 tokens 19 % of the time).
The token ruler plans the cuts on one tokenisation of the whole text (token offsets), then
re-tokenises every chunk on its own and re-cuts the rare one that came out longer (a word split
between word pieces can tokenise differently alone), so the guarantee holds for the exact text
that is stored and embedded.

Blank lines are found in one pass; sentence and word ends by greedy regular expressions that
scan one window per chunk from its end backwards. The cost is linear in the length of the
text whatever the text: no pattern can rescan a run of characters from each of its positions.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from typing import Protocol

from tokenizers import Tokenizer

__all__ = ["CharRuler", "Ruler", "TokenChunker", "TokenRuler", "chunk_spans", "chunk_text"]

# A blank line and the whitespace after it: one match per run of blank lines.
_BLANK_LINES = re.compile(r"\n[^\S\n]*\n\s*")
# The last sentence end in a window: . ! ? or … (plus closing quotes/brackets) followed by
# whitespace, or a CJK full stop, which no space follows.
_LAST_SENTENCE_END = re.compile(
    r".*(?:[.!?\u2026][\"'\u201d\u2019\u00bb)\]]*(?=\s)"
    r"|[\u3002\uff01\uff1f][\u201d\u2019\u300d\u300f\u3011\u300b\uff09)\]]*(?=.))",
    re.DOTALL,
)
_LAST_WORD_END = re.compile(r".*\S(?=\s)", re.DOTALL)
_WORD_START = re.compile(r"\s\S")
_SPACE = re.compile(r"\s")
_NON_SPACE = re.compile(r"\S")


class Ruler(Protocol):
    """Measures slices of one text in some unit; positions are character offsets."""

    def size(self, start: int, end: int) -> int:
        """Units in ``text[start:end]`` (a unit cut by either end counts)."""

    def limit(self, start: int, n: int) -> int:
        """The furthest ``end > start`` such that ``text[start:end]`` holds at most ``n`` units
        (for ``n >= 1``; one unit longer than the text left is cut at the text's end)."""

    def back(self, end: int, n: int) -> int:
        """Where the last ``n`` units before ``end`` begin."""


class CharRuler:
    """Characters: the unit of the pre-token chunker and of the OpenAI provider without a tokenizer."""

    def __init__(self, text: str) -> None:
        self.length = len(text)

    def size(self, start: int, end: int) -> int:
        return end - start

    def limit(self, start: int, n: int) -> int:
        return min(start + n, self.length)

    def back(self, end: int, n: int) -> int:
        return end - n


class TokenRuler:
    """Tokens of ``tokenizer``, located by the offsets of one tokenisation of the whole text.

    Special tokens ([CLS], [SEP]) are not counted here; :class:`TokenChunker` leaves room for them.
    """

    def __init__(self, text: str, tokenizer: Tokenizer) -> None:
        encoding = tokenizer.encode(text, add_special_tokens=False)
        kept = [(o, i) for o, i in zip(encoding.offsets, encoding.ids, strict=True) if o[1] > o[0]]
        self.length = len(text)
        self.starts = [o[0] for o, _ in kept]
        self.ends = [o[1] for o, _ in kept]
        self.ids = [i for _, i in kept]

    def ids_between(self, start: int, end: int) -> list[int]:
        """The ids of the tokens inside ``text[start:end]`` (both ends at token boundaries)."""
        return self.ids[bisect_left(self.starts, start) : bisect_left(self.starts, end)]

    def size(self, start: int, end: int) -> int:
        return max(bisect_left(self.starts, end) - bisect_right(self.ends, start), 0)

    def limit(self, start: int, n: int) -> int:
        i = bisect_right(self.ends, start) + n  # the first token that does not fit
        if i >= len(self.starts):
            return self.length
        return max(self.starts[i], start + 1)

    def back(self, end: int, n: int) -> int:
        j = bisect_left(self.starts, end) - n
        return self.starts[max(j, 0)] if self.starts else 0


def _check_sizes(chunk_size: int, overlap: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    if overlap < 0:
        raise ValueError(f"overlap must not be negative, not {overlap}")
    if overlap >= chunk_size:
        raise ValueError(f"overlap ({overlap}) must be smaller than chunk_size ({chunk_size})")


def chunk_spans(
    text: str, chunk_size: int = 800, overlap: int = 100, ruler: Ruler | None = None
) -> list[tuple[int, int]]:
    """``(start, end)`` offsets of chunks of at most ``chunk_size`` units of ``ruler`` (characters
    by default), each overlapping the previous by at most ``overlap`` units."""
    _check_sizes(chunk_size, overlap)
    first = _NON_SPACE.search(text)
    if first is None:
        return []
    r: Ruler = ruler or CharRuler(text)
    text_end = len(text.rstrip())
    # Blank lines are far fewer than characters: one pass over the text costs less than
    # scanning every window backwards for them.
    blank_lines = [m.start() for m in _BLANK_LINES.finditer(text)]

    def cut(start: int, new: int) -> int | None:
        """The best end for a chunk from ``start`` whose new text begins at ``new``."""
        limit = r.limit(start, chunk_size)
        floor = max(r.limit(new, r.size(new, limit) // 2) if limit > new else new, new + 1)
        i = bisect_right(blank_lines, limit) - 1
        if i >= 0:
            end = blank_lines[i]
            while end > start and text[end - 1].isspace():  # spaces ending the last line
                end -= 1
            if end >= floor:
                return end
        # endpos = limit + 1 so that the lookaheads can see text[limit]; starting at
        # floor - 1 keeps every end found at or after floor.
        m = _LAST_SENTENCE_END.match(text, floor - 1, limit + 1)
        if m is None:
            m = _LAST_WORD_END.match(text, new, limit + 1)
        return m.end() if m else None

    spans: list[tuple[int, int]] = []
    start = new = first.start()
    while r.size(start, text_end) > chunk_size:
        end = cut(start, new)
        if end is None:
            # The word at `new` does not fit after the overlap.
            space = _SPACE.search(text, new, r.limit(new, chunk_size) + 1)
            word_end = space.start() if space else len(text)
            if r.size(new, word_end) <= chunk_size:
                # Give up as much overlap as the word needs; the next cut will find its end.
                m = _WORD_START.search(text, max(r.back(word_end, chunk_size), start) - 1, new)
                start = m.start() + 1 if m else new
                continue
            end = r.limit(start, chunk_size)  # a word longer than a chunk: the only hard split
        spans.append((start, end))
        new = _NON_SPACE.search(text, end).start()  # type: ignore[union-attr]  # end < text_end
        m = _WORD_START.search(text, max(r.back(end, overlap), start + 1) - 1, end) if overlap else None
        # No overlap across a whitespace run so long that it would leave no room for new text.
        start = m.start() + 1 if m and r.size(m.start(), new) <= chunk_size else new
    spans.append((start, text_end))
    return spans


def chunk_text(text: str, chunk_size: int = 800, overlap: int = 100) -> list[str]:
    """Chunks of at most ``chunk_size`` characters, never empty or whitespace-only.

    Raises ``ValueError`` unless ``0 <= overlap < chunk_size``.
    """
    return [text[start:end] for start, end in chunk_spans(text, chunk_size, overlap)]


#: Characters planned at once by :class:`TokenChunker` (a 50 MB text would otherwise hold
#: ~12 million offset pairs in Python lists).
SEGMENT = 200_000


def _segment_end(text: str, lo: int, size: int) -> int:
    if len(text) - lo <= size:
        return len(text)
    window_start = lo + size // 2
    for boundary in ("\n\n", "\n", " "):
        i = text.rfind(boundary, window_start, lo + size)
        if i >= 0:
            return i + len(boundary)
    return lo + size  # no whitespace at all in half a segment: a hard split


#: Pre-tokenizers that split at every whitespace character and never merge across it, after a
#: character-by-character normaliser (true of BERT's): for them a slice whose ends are at
#: whitespace tokenises alone into exactly its tokens inside the whole text.
_WHITESPACE_SPLITTING = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit"})


def _splits(char: str) -> bool:
    """Whitespace to BERT too: Python's ``isspace`` also admits control characters (U+001C-U+001F,
    U+0085) that BERT deletes, and line separators that it keeps inside words."""
    return char in "\t\n\r" or unicodedata.category(char) == "Zs"


def _special_ids(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """The ids the post-processor puts before and after a single text ([CLS] / [SEP] for BERT)."""
    probe = "a"
    bare = tokenizer.encode(probe, add_special_tokens=False).ids
    full = tokenizer.encode(probe).ids
    for k in range(len(full) - len(bare) + 1):
        if full[k : k + len(bare)] == bare:
            return full[:k], full[k + len(bare) :]
    raise ValueError("the tokenizer's post-processor changes the text's own tokens; cannot chunk with it")


class TokenChunker:
    """Chunks that fit an embedding model's window, counted with the model's own tokenizer.

    ``chunk_size`` is the length of the model's input *including* its special tokens, so that
    ``chunk_size = max_tokens`` fills the window exactly; ``overlap`` is in tokens of text.
    Thread-safe: the tokenizer is only read.
    """

    def __init__(self, tokenizer: Tokenizer, chunk_size: int, overlap: int) -> None:
        processor = tokenizer.post_processor
        self.specials = processor.num_special_tokens_to_add(False) if processor is not None else 0
        self.tokenizer = tokenizer
        self.chunk_size = chunk_size
        self.budget = chunk_size - self.specials
        if self.budget < 1:
            raise ValueError(f"chunk_size ({chunk_size}) leaves no room for text after {self.specials} special tokens")
        _check_sizes(self.budget, overlap)
        self.overlap = overlap
        #: Whether a slice cut at whitespace tokenises alone exactly as it did inside the text.
        self.whitespace_safe = type(tokenizer.pre_tokenizer).__name__ in _WHITESPACE_SPLITTING
        self._prefix, self._suffix = _special_ids(tokenizer)

    def count(self, texts: list[str]) -> list[int]:
        """The model-input length of each text, special tokens included (no truncation)."""
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts)]

    def spans(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` of every chunk; each one alone tokenises to at most ``chunk_size``."""
        return [span for span, _ in self.plan(text)]

    def chunks(self, text: str) -> list[str]:
        return [text[a:b] for a, b in self.spans(text)]

    def chunks_with_ids(self, text: str) -> tuple[list[str], list[list[int]]]:
        """The chunks and each one's model input ids (special tokens included), exactly what
        ``tokenizer.encode(chunk).ids`` gives: the embedder can skip tokenising them again."""
        plan = self.plan(text)
        return [text[a:b] for (a, b), _ in plan], [ids for _, ids in plan]

    def plan(self, text: str) -> list[tuple[tuple[int, int], list[int]]]:
        """Every chunk's span with its ids.

        A long text is planned in segments of about ``SEGMENT`` characters ending at a blank line
        (else a line or word end), so that the token offsets held at once stay small; no chunk
        overlaps a segment boundary.
        """
        out: list[tuple[tuple[int, int], list[int]]] = []
        lo = 0
        while lo < len(text):
            hi = _segment_end(text, lo, SEGMENT)
            out += self._plan(text, lo, hi, self.budget, self.overlap)
            lo = hi
        return out

    def _plan(self, text: str, lo: int, hi: int, budget: int, overlap: int) -> list[tuple[tuple[int, int], list[int]]]:
        part = text[lo:hi]
        ruler = TokenRuler(part, self.tokenizer)
        spans = [(lo + a, lo + b) for a, b in chunk_spans(part, budget, overlap, ruler)]
        if not spans:
            return []
        # Re-tokenising every chunk costs as much as planning; skip it where the plan is exact.
        check = [
            i
            for i, (a, b) in enumerate(spans)
            if not self.whitespace_safe
            or (a > 0 and not _splits(text[a - 1]))
            or (b < len(text) and not _splits(text[b]))
        ]
        encoded = self.tokenizer.encode_batch([text[spans[i][0] : spans[i][1]] for i in check])
        alone = {i: e.ids for i, e in zip(check, encoded, strict=True)}
        out: list[tuple[tuple[int, int], list[int]]] = []
        for i, (a, b) in enumerate(spans):
            ids = alone.get(i)
            if ids is None:  # cut at whitespace: its tokens in place are its tokens alone
                out.append(((a, b), self._prefix + ruler.ids_between(a - lo, b - lo) + self._suffix))
            elif len(ids) <= self.chunk_size:
                out.append(((a, b), ids))
            else:
                # Alone, this slice tokenises longer than planned: cut it again with less room.
                smaller = budget - (len(ids) - self.chunk_size)
                if smaller < 1:
                    raise ValueError(f"cannot cut {text[a:b][:60]!r} into pieces of {self.chunk_size} tokens")
                out.extend(self._plan(text, a, b, smaller, 0))
        return out
