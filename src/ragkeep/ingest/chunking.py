"""Split text into overlapping chunks of at most ``chunk_size`` characters.

Each chunk is cut at the strongest boundary that still fills at least half of the room it
has for new text: a paragraph break, else a sentence end, else a word end. The half-room
rule keeps a short heading with the section it introduces instead of emitting it alone,
while text made of short paragraphs is never cut mid-paragraph. A word is split only
when it is longer than ``chunk_size`` on its own.

Every chunk is a verbatim slice of the input (see :func:`chunk_spans`), so a chunk can be
mapped back to its character offsets, and the next chunk starts at a word boundary within
the last ``overlap`` characters of the previous one, giving the embedder some context.

Blank lines are found in one pass; sentence and word ends by greedy regular expressions that
scan one window per chunk from its end backwards. The cost is linear in the length of the
text whatever the text: no pattern can rescan a run of characters from each of its positions.
"""

from __future__ import annotations

import re
from bisect import bisect_right

__all__ = ["chunk_spans", "chunk_text"]

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


def chunk_spans(text: str, chunk_size: int = 800, overlap: int = 100) -> list[tuple[int, int]]:
    """``(start, end)`` offsets of the chunks :func:`chunk_text` returns."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    if overlap < 0:
        raise ValueError(f"overlap must not be negative, not {overlap}")
    if overlap >= chunk_size:
        raise ValueError(f"overlap ({overlap}) must be smaller than chunk_size ({chunk_size})")
    first = _NON_SPACE.search(text)
    if first is None:
        return []
    text_end = len(text.rstrip())
    # Blank lines are far fewer than characters: one pass over the text costs less than
    # scanning every window backwards for them.
    blank_lines = [m.start() for m in _BLANK_LINES.finditer(text)]

    def cut(start: int, new: int) -> int | None:
        """The best end for a chunk from ``start`` whose new text begins at ``new``."""
        limit = start + chunk_size
        floor = max(new + (limit - new) // 2, new + 1)
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
    while text_end - start > chunk_size:
        end = cut(start, new)
        if end is None:
            # The word at `new` does not fit after the overlap.
            space = _SPACE.search(text, new, new + chunk_size + 1)
            word_end = space.start() if space else len(text)
            if word_end - new <= chunk_size:
                # Give up as much overlap as the word needs; the next cut will find its end.
                m = _WORD_START.search(text, word_end - chunk_size - 1, new)
                start = m.start() + 1 if m else new
                continue
            end = start + chunk_size  # a word longer than a chunk: the only hard split
        spans.append((start, end))
        new = _NON_SPACE.search(text, end).start()  # type: ignore[union-attr]  # end < text_end
        m = _WORD_START.search(text, max(end - overlap, start + 1) - 1, end) if overlap else None
        # No overlap across a whitespace run so long that it would leave no room for new text.
        start = m.start() + 1 if m and new - m.start() <= chunk_size else new
    spans.append((start, text_end))
    return spans


def chunk_text(text: str, chunk_size: int = 800, overlap: int = 100) -> list[str]:
    """Chunks of at most ``chunk_size`` characters, never empty or whitespace-only.

    Raises ``ValueError`` unless ``0 <= overlap < chunk_size``.
    """
    return [text[start:end] for start, end in chunk_spans(text, chunk_size, overlap)]
