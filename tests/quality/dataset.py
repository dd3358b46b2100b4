"""A retrieval test set made from reStructuredText nobody here wrote: headings ask, sections answer.

Used by ``bench/quality.py`` (Debian's linux-doc documentation) and by ``tests/quality`` (the
Python reference topics every Python ships, ``pydoc_data.topics``, written in the same style).
The construction is described in docs/quality.md; in short:

* each document's section headings (a title line over an underline of one repeated punctuation
  character, optionally with an overline) are **removed** from the text that is ingested, so a
  query cannot be answered by finding its own words in a heading;
* a heading becomes a query when it is unique in the whole corpus (case-folded; "Introduction"
  and "Example" are not questions with one answer), has at least two words, and its section
  (up to the next heading of any level) holds at least ``min_chars`` characters;
* the relevant set of a query is every chunk of that document overlapping the section's span.
  Relevance is binary.

Everything here is pure: no server, no model, so it can be tested and reused as is.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

_UNDERLINE = re.compile(r"^([=\-~^*+#\"'`:._])\1{2,}\s*$")
_MARKUP = re.compile(r"``|\*\*|\*|`|:[a-z]+:|\\")
_ENUMERATOR = re.compile(r"^\s*(?:\d+(?:\.\d+)*[.)]?|[A-Za-z][.)]|[ivxIVX]+[.)])\s+")


@dataclass(frozen=True)
class Section:
    heading: str
    start: int
    end: int


@dataclass(frozen=True)
class Document:
    name: str
    #: The text to ingest: the source with its heading lines removed.
    text: str
    sections: tuple[Section, ...]


@dataclass(frozen=True)
class Query:
    text: str
    document: str
    start: int
    end: int


def _is_heading(lines: list[str], i: int) -> bool:
    """``lines[i]`` is a title: text, then an underline at least as long (reST's rule)."""
    title = lines[i].rstrip()
    if not title or title[0].isspace() or i + 1 >= len(lines) or _UNDERLINE.match(title):
        return False
    under = lines[i + 1].rstrip()
    return bool(_UNDERLINE.match(under)) and len(under) >= len(title) and any(c.isalpha() for c in title)


def parse_rst(name: str, source: str) -> Document:
    """Split ``source`` at its headings; offsets are into the returned, heading-free text."""
    lines = source.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    size = 0  # characters in "\n".join(out) + "\n" so far
    headings: list[tuple[str, int]] = []
    i = 0
    while i < len(lines):
        if _is_heading(lines, i):
            if out and _UNDERLINE.match(out[-1].rstrip()) and out[-1].strip()[0] == lines[i + 1].strip()[0]:
                size -= len(out.pop()) + 1  # the overline of an over-and-under title
            headings.append((lines[i].strip(), size))
            out.append("")  # keep a paragraph break where the heading was
            size += 1
            i += 2
            continue
        out.append(lines[i])
        size += len(lines[i]) + 1
        i += 1
    text = "\n".join(out)
    sections = []
    for k, (heading, start) in enumerate(headings):
        end = headings[k + 1][1] if k + 1 < len(headings) else len(text)
        sections.append(Section(heading, start, end))
    return Document(name, text, tuple(sections))


def query_text(heading: str) -> str:
    """A heading as a person would type it: no reST markup, no section number."""
    text = _MARKUP.sub("", heading)
    text = _ENUMERATOR.sub("", text)
    return " ".join(text.split()).strip(" :")


#: The Python reference topics ``tests/quality`` ingests: two long topics with many sections and a
#: few short ones (~170 chunks, ~50 queries); ``bench/quality.py --pydoc --subset`` runs the same.
PYDOC_TEST_TOPICS = (
    "types", "compound", "assignment", "comparisons", "import", "identifiers", "assert", "raise",
    "break", "continue", "del", "pass", "return", "yield", "nonlocal", "global",
)  # fmt: skip


def pydoc_documents(names: tuple[str, ...] | None = None) -> list[Document]:
    """The Python reference topics (shipped with every Python), all or ``names``, as documents."""
    from pydoc_data.topics import topics

    return [parse_rst(name, topics[name]) for name in sorted(names or topics)]


def build_queries(documents: list[Document], min_chars: int = 200) -> list[Query]:
    """One query per heading that names a single section of the corpus (see the module docstring)."""
    candidates = [(query_text(s.heading), d, s) for d in documents for s in d.sections]
    counts = Counter(q.casefold() for q, _, _ in candidates)
    queries = []
    for q, d, s in candidates:
        words = re.findall(r"[A-Za-z]{2,}", q)
        body = d.text[s.start : s.end].strip()
        if counts[q.casefold()] == 1 and len(words) >= 2 and len(body) >= min_chars:
            queries.append(Query(q, d.name, s.start, s.end))
    return queries


def locate(text: str, chunks: list[str]) -> list[tuple[int, int]]:
    """Offsets of each stored chunk (in chunk order) in the ingested text: chunks are verbatim
    slices, and each starts after the previous one's start."""
    spans, pos = [], 0
    for chunk in chunks:
        at = text.find(chunk, pos)
        if at < 0:
            raise ValueError(f"a stored chunk is not a slice of its document: {chunk[:80]!r}")
        spans.append((at, at + len(chunk)))
        pos = at + 1
    return spans


def relevant(query: Query, chunk_spans: dict[str, list[tuple[str, int, int]]]) -> set[str]:
    """Ids of the chunks of the query's document that overlap its section."""
    return {cid for cid, a, b in chunk_spans.get(query.document, []) if a < query.end and b > query.start}


@dataclass(frozen=True)
class Scores:
    ndcg: float
    recall: float
    mrr: float


def score(ranked: list[str], relevant_ids: set[str], k: int = 10) -> Scores:
    """nDCG@k (binary gains, log2 discount), recall@k, and reciprocal rank of the first hit
    (within k, so that MRR says how high the first useful chunk comes in what a user sees)."""
    top = ranked[:k]
    dcg = sum(1 / math.log2(i + 2) for i, cid in enumerate(top) if cid in relevant_ids)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant_ids), k)))
    first = next((i for i, cid in enumerate(top) if cid in relevant_ids), None)
    return Scores(
        ndcg=dcg / ideal if ideal else 0.0,
        recall=len(set(top) & relevant_ids) / len(relevant_ids) if relevant_ids else 0.0,
        mrr=1 / (first + 1) if first is not None else 0.0,
    )


def mean(scores: list[Scores]) -> Scores:
    n = max(len(scores), 1)
    return Scores(
        ndcg=sum(s.ndcg for s in scores) / n,
        recall=sum(s.recall for s in scores) / n,
        mrr=sum(s.mrr for s in scores) / n,
    )
