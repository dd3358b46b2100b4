"""The parser pool: a parse past its time is killed (a 422 naming the setting) and the next one
gets a fresh worker; the worker processes are real (python -m ragkeep.ingest.isolation)."""

from __future__ import annotations

import asyncio

import pytest

from ragkeep.api.errors import describe, domain_error_response
from ragkeep.errors import Unavailable
from ragkeep.ingest.isolation import ParserPool
from ragkeep.ingest.parsers import ParseLimitExceeded, ParseLimits
from tests.faults.test_ingest_content import many_paragraphs


def test_a_parse_past_its_time_is_killed_and_the_pool_goes_on() -> None:
    async def run() -> None:
        pool = ParserPool(1, 1.0, 1024, ParseLimits(max_elements=10_000_000))
        try:
            assert (await pool.parse(b"warm up", "a.txt", None)).text == "warm up"
            first = pool._idle[0].process
            with pytest.raises(ParseLimitExceeded, match=r"ingestion\.parse_timeout_seconds"):
                await pool.parse(many_paragraphs(1_000_000), "slow.docx", None)
            assert first.poll() is not None  # the worker was killed
            assert (await pool.parse(b"after", "b.txt", None)).text == "after"
        finally:
            await pool.close()

    asyncio.run(run())


def test_a_parse_after_close_is_unavailable_not_the_documents_fault() -> None:
    """At shutdown the upload is refused as a 503 (try again), never a 422 (the document is bad)."""

    async def run() -> None:
        pool = ParserPool(1, 5.0, 1024, ParseLimits())
        await pool.close()
        with pytest.raises(Unavailable, match="stopping") as info:
            await pool.parse(b"late", "late.txt", None)
        assert describe(info.value) == (503, "Unavailable")
        assert domain_error_response(info.value).headers["Retry-After"] == "1"
        assert not pool._workers  # the worker started for it was killed

    asyncio.run(run())
