"""The cluster suite: a primary from ``ragkeep db start``, a standby from ``ragkeep db replica``,
three ``ragkeep serve`` processes and HAProxy, all on 127.0.0.1 (tests/support/cluster.py).

Each module starts one cluster (``module_cluster``, with the module's ``CLUSTER_SETTINGS``) that
its tests share; each test makes its own users. Skipped without HAProxy, a failure under CI=true.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

from tests.support.cluster import Cluster, cluster
from tests.support.system import require_tool

with warnings.catch_warnings():  # R2R's package still uses pydantic v1-style configs
    warnings.simplefilter("ignore", DeprecationWarning)
    import r2r  # noqa: F401  (imported once here, quietly)

HAPROXY_HINT = "apt-get install -y haproxy"


@pytest.fixture(scope="module")
def module_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tool = require_tool("haproxy", HAPROXY_HINT)
    settings = getattr(request.module, "CLUSTER_SETTINGS", {})
    with cluster(tmp_path_factory.mktemp("cluster"), replicas=3, standby=True, settings=settings,
                 haproxy=tool) as c:
        yield c


@pytest.fixture
def lb(module_cluster: Cluster) -> Iterator[Cluster]:
    """The module's cluster with every replica running and UP in HAProxy (a test that failed
    half-way through a kill or a restart leaves none down for the next one)."""
    module_cluster.heal()
    module_cluster.wait_in_rotation()
    yield module_cluster
