"""The on-disk index sizes the advice warns with: bench/sizing.py's figures at 384 dimensions, and
the page rule for larger vectors."""

from __future__ import annotations

from ragkeep.indices.sizing import INDEX_BYTES_PER_VECTOR, index_bytes, index_bytes_per_vector


def test_measured_dimension_gives_the_measured_figures() -> None:
    for m, per in INDEX_BYTES_PER_VECTOR.items():
        assert index_bytes_per_vector(384, m) == per
    assert index_bytes(1_000_000, 384, 16) == round(1_000_000 * INDEX_BYTES_PER_VECTOR[16])
    lo, hi = INDEX_BYTES_PER_VECTOR[16], INDEX_BYTES_PER_VECTOR[32]
    assert lo <= index_bytes_per_vector(384, 24) <= hi  # between the measured m


def test_an_element_over_half_a_page_takes_a_page() -> None:
    assert index_bytes_per_vector(1536, 16) == 8192  # 6 kB of vector: one element per 8 kB page
    assert index_bytes_per_vector(768, 16) > index_bytes_per_vector(384, 16)
