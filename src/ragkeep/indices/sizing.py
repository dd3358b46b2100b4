"""How large an HNSW index is on disk, hence how much ``shared_buffers`` keeps it warm.

A search walks the graph page by page: once the index is larger than ``shared_buffers``, pages
are evicted and re-read (from the OS cache at best, from disk once it exceeds the RAM too), and
latency grows with every miss. The build memory (``memory.hnsw_bytes``) is a different, larger
figure: the in-memory graph holds neighbour pointers and distances that the on-disk pages do not.

The figures below are measured, not modelled: keep them in this one place and update them from
the bench when pgvector or the page layout changes.
"""

from __future__ import annotations

import math

from ragkeep.indices.memory import vector_bytes

#: On-disk bytes per vector (``pg_relation_size`` / rows) of a pgvector 0.8 HNSW index, cosine,
#: 384 dimensions, by m (ef_construction 64 at m = 16, 80 at m = 32).
#: Measured by bench/sizing.py on 2026-12-06 (100,000 vectors, embedded PostgreSQL 18, pgvector
#: 0.8: m = 16: 2,048 B, m = 32: 2,124 B; the 20,000-vector quick run gave the same within 1 B).
INDEX_BYTES_PER_VECTOR: dict[int, float] = {16: 2048.0, 32: 2124.0}
#: The dimension the figures above were measured at.
MEASURED_DIMENSION = 384
PAGE = 8192
#: Usable bytes of an 8 kB index page (page header and pgvector's special space).
PAGE_USABLE = 8192 - 24 - 16


def index_bytes_per_vector(dimension: int, m: int) -> float:
    """Measured bytes at ``MEASURED_DIMENSION``, linear in m between (and beyond) the measured m.
    Another dimension (a model, not measured): the element tuple grows or shrinks by the vector's
    size difference; an element is never split across pages, so one larger than half a page
    takes a page of its own (1,536 dimensions: 8 kB per vector, not ~6.6 kB)."""
    (m1, b1), (m2, b2) = sorted(INDEX_BYTES_PER_VECTOR.items())[:2]
    per = b1 + (b2 - b1) * (m - m1) / (m2 - m1)
    if dimension != MEASURED_DIMENSION:
        per += vector_bytes(dimension) - vector_bytes(MEASURED_DIMENSION)
    if per > PAGE_USABLE / 2:
        per = math.ceil(per / PAGE_USABLE) * PAGE
    return max(per, float(vector_bytes(dimension)))


def index_bytes(rows: int, dimension: int, m: int) -> int:
    """The expected on-disk size of an HNSW index over ``rows`` vectors."""
    return math.ceil(rows * index_bytes_per_vector(dimension, m))
