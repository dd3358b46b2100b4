"""The planner tests (tests/search/test_planner.py) and the isolation property test
(tests/search/test_isolation_property.py), run unchanged on a distributed database: the same test
functions and their fixtures, imported, with this module's ``settings``, ``server`` and
``base_url`` pointing them at a database of the Citus cluster (migrated, distributed in 4 shards)
and a server on it. A test that cannot pass on Citus is wrapped here with the reason."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from ragkeep.config import Settings
from ragkeep.db import citus
from ragkeep.db.database import prepare_schema
from ragkeep.db.distribute import distribute
from tests.search import test_planner as planner_tests
from tests.search.test_isolation_property import (  # noqa: F401  (fixtures and tests pytest collects here)
    admin_token,
    db,
    http,
    test_like_pattern_ending_in_the_escape_character_is_a_422,
    test_nan_in_a_range_comparison_is_a_422,
    test_search_returns_exactly_the_visible_matching_chunks,
)
from tests.search.test_planner import (  # noqa: F401
    data,
    ef_index,
    test_a_selective_filter_never_comes_back_short,
    test_api_applies_r2r_chunk_settings_ef_search,
    test_ef_search_is_applied_for_the_transaction_only,
    test_hybrid_over_a_large_scope_matches_the_exact_semantic_ranks,
    test_large_scope_uses_the_global_index_with_an_iterative_scan,
    test_naming_another_owner_does_not_plan_on_their_count,
    test_small_scope_is_an_exact_scan_with_every_true_neighbour,
    test_unfiltered_superuser_scope_counts_every_vector,
)
from tests.support import ServerThread, make_settings

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def distributed_url(citus_cluster: citus.Cluster) -> str:
    url = citus.create_database(citus_cluster, f"search_{uuid.uuid4().hex[:8]}")
    prepare_schema(url, 384, "all-MiniLM-L6-v2")
    with psycopg.connect(url, autocommit=True) as conn:
        distribute(conn, shard_count=4)
    return url


@pytest.fixture(scope="module")
def settings(distributed_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(tmp_path_factory.mktemp("home"), distributed_url, auth={"login_failures_per_address": 0})


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def base_url(server: ServerThread) -> str:
    return server.base_url


def test_promoted_owner_uses_its_partial_index_even_after_many_executions(data) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    planner_tests.test_promoted_owner_uses_its_partial_index_even_after_many_executions(data)
