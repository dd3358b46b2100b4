"""The local cluster of ``ragkeep db start --citus-workers``: nodes registered, a distributed table
routed by owner_id to one shard, an HNSW index per shard that a pinned query uses."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from ragkeep.db import citus

pytestmark = pytest.mark.db

DIMENSION = 8


def _explain(conn: psycopg.Connection, query: str, params: tuple[object, ...]) -> str:
    """EXPLAIN with the values bound client-side: a worker cannot type the ``$n`` of an EXPLAIN
    forwarded with server-side parameters (docs/citus-notes.md)."""
    with psycopg.ClientCursor(conn) as cur:
        return "\n".join(str(r[0]) for r in cur.execute("EXPLAIN " + query, params).fetchall())


def test_every_node_is_registered_and_reachable(citus_cluster: citus.Cluster) -> None:
    nodes = citus.list_nodes(citus_cluster.coordinator)
    assert [(n.role, n.port) for n in nodes] == [
        ("coordinator", citus_cluster.coordinator.port), *(("worker", w.port) for w in citus_cluster.workers)
    ]
    with psycopg.connect(citus_cluster.coordinator.url) as conn:
        # Each node to each node, over TCP as the ragkeep role (pg_dist_authinfo on every node).
        health = conn.execute("SELECT from_nodeport, to_nodeport, result FROM citus_check_cluster_node_health()")
        rows = health.fetchall()
    assert len(rows) == 9
    assert all(ok for _, _, ok in rows), rows


def test_a_second_start_keeps_the_cluster(citus_cluster: citus.Cluster) -> None:
    again = citus.start_cluster(citus_cluster.coordinator.data_dir, 2)
    assert not again.coordinator.started
    assert [w.port for w in again.workers] == [w.port for w in citus_cluster.workers]
    assert len(citus.list_nodes(again.coordinator)) == 3
    with pytest.raises(citus.CitusError, match="removing workers"):
        citus.start_cluster(citus_cluster.coordinator.data_dir, 1)


@pytest.fixture(scope="module")
def vectors(citus_cluster: citus.Cluster) -> list[uuid.UUID]:
    """A distributed table of 8-dimensional vectors of 20 owners, with an HNSW index; the owners."""
    owners = [uuid.uuid4() for _ in range(20)]
    with psycopg.connect(citus_cluster.coordinator.url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")  # on every node: Citus propagates it
        conn.execute(f"CREATE TABLE test_vectors (owner_id uuid NOT NULL, id bigint NOT NULL, "
                     f"embedding vector({DIMENSION}) NOT NULL, PRIMARY KEY (owner_id, id))")
        conn.execute("SELECT create_distributed_table('test_vectors', 'owner_id')")
        conn.execute(
            """INSERT INTO test_vectors
               SELECT o, i, ('[' || array_to_string(ARRAY(SELECT sin(i * d + k) FROM generate_series(1, %s) d), ',')
                             || ']')::vector
               FROM unnest(%s::uuid[]) WITH ORDINALITY AS t(o, k), generate_series(1, 300) i""",
            (DIMENSION, owners),
        )
        conn.execute("CREATE INDEX test_vectors_hnsw ON test_vectors USING hnsw (embedding vector_cosine_ops)")
        conn.execute("ANALYZE test_vectors")
        conn.commit()
    return owners


def test_an_owner_pinned_query_runs_on_one_shard(citus_cluster: citus.Cluster, vectors: list[uuid.UUID]) -> None:
    with psycopg.connect(citus_cluster.coordinator.url) as conn:
        pinned = _explain(conn, "SELECT count(*) FROM test_vectors WHERE owner_id = %s", (vectors[0],))
        everyone = _explain(conn, "SELECT count(*) FROM test_vectors", ())
        shards = conn.execute("SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'test_vectors'::regclass")
        shard_count = shards.fetchone()[0]  # type: ignore[index]
        assert conn.execute("SELECT count(*) FROM test_vectors WHERE owner_id = %s",
                            (vectors[0],)).fetchone() == (300,)
    assert "Task Count: 1\n" in pinned + "\n"
    assert f"Task Count: {shard_count}" in everyone and shard_count > 1


def test_the_hnsw_index_is_on_every_shard_and_a_pinned_search_uses_it(
    citus_cluster: citus.Cluster, vectors: list[uuid.UUID]
) -> None:
    with psycopg.connect(citus_cluster.coordinator.url) as conn:
        per_shard = conn.execute(
            """SELECT s.shardid, r.result FROM pg_dist_shard s,
                   run_command_on_shards('test_vectors', $$SELECT count(*) FROM pg_indexes
                       WHERE tablename = '%s' AND indexdef LIKE '%%USING hnsw%%'$$) r
               WHERE s.logicalrelid = 'test_vectors'::regclass AND r.shardid = s.shardid"""
        ).fetchall()
        assert per_shard and all(result == "1" for _, result in per_shard), per_shard
        query = ("SELECT id FROM test_vectors WHERE owner_id = %s "
                 "ORDER BY embedding <=> %s::vector LIMIT 5")
        probe = "[" + ",".join("0.5" for _ in range(DIMENSION)) + "]"
        with conn.transaction():
            # A plain SET stays on the coordinator; SET LOCAL with propagation reaches the worker.
            conn.execute("SET LOCAL citus.propagate_set_commands = 'local'")
            conn.execute("SET LOCAL enable_sort = off")  # as ragkeep searches do: the ordered index scan wins
            plan = _explain(conn, query, (vectors[3], probe))
            found = conn.execute(query, (vectors[3], probe)).fetchall()
    assert "Task Count: 1" in plan
    assert "test_vectors_hnsw" in plan, plan
    assert len(found) == 5
