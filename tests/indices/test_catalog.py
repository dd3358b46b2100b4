"""GET /v3/indices lists the vector indexes PostgreSQL really has, to superusers only."""

import psycopg


def test_lists_real_vector_indexes_to_superusers_only(admin, make_user, settings) -> None:
    name = "ix_test_catalog_hnsw"
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        conn.execute(
            f"CREATE INDEX {name} ON chunks USING hnsw (embedding vector_cosine_ops) WITH (m = 8, ef_construction = 32)"
        )
    try:
        r = admin.get("/v3/indices", params={"filters": '{"table_name": "vectors"}'})
        assert r.status_code == 200, r.text
        found = [i["index"] for i in r.json()["results"]["indices"] if i["index"]["name"] == name]
        assert len(found) == 1
        ix = found[0]
        assert ix["table_name"] == "chunks" and ix["method"] == "hnsw" and ix["opclass"] == "vector_cosine_ops"
        assert ix["arguments"] == {"m": 8, "ef_construction": 32}
        assert ix["status"] == "valid" and ix["size_in_bytes"] > 0
        assert r.json()["total_entries"] >= 1
        # Non-vector indexes (the btree, the GIN) are not listed.
        assert all(i["index"]["method"] in ("hnsw", "ivfflat") for i in r.json()["results"]["indices"])
        user = make_user()
        assert user.client.get("/v3/indices").status_code == 403
        assert admin.get("/v3/indices", params={"filters": '{"table_name": "users"}'}).status_code == 422
    finally:
        with psycopg.connect(settings.database.url, autocommit=True) as conn:
            conn.execute(f"DROP INDEX {name}")


def _wait_valid(admin, name: str, timeout: float = 120) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = admin.get(f"/v3/indices/vectors/{name}")
        if r.status_code == 200 and r.json()["results"]["index"]["status"] == "valid":
            return r.json()["results"]["index"]
        time.sleep(0.2)
    raise AssertionError(f"index {name} did not become valid")


def test_create_inspect_and_drop(admin, make_user, settings) -> None:
    body = {"config": {"table_name": "vectors", "index_method": "hnsw", "index_measure": "l2_distance",
                       "index_arguments": {"m": 8, "ef_construction": 40}, "index_name": "ix_test_build"}}
    r = admin.post("/v3/indices", json=body)
    assert r.status_code == 202, r.text
    ix = _wait_valid(admin, "ix_test_build")
    assert ix["opclass"] == "vector_l2_ops" and ix["arguments"] == {"m": 8, "ef_construction": 40}
    with psycopg.connect(settings.database.url) as conn:
        indexdef = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_test_build'").fetchone()[0]
    assert "USING hnsw (embedding vector_l2_ops)" in indexdef
    assert admin.post("/v3/indices", json=body).status_code == 409  # the name is taken
    user = make_user()
    assert user.client.post("/v3/indices", json=body).status_code == 403
    assert user.client.delete("/v3/indices/vectors/ix_test_build").status_code == 403  # R2R lets anyone
    assert "dropped" in admin.delete("/v3/indices/vectors/ix_test_build").json()["results"]["message"]
    assert admin.get("/v3/indices/vectors/ix_test_build").status_code == 404
    # Only vector indexes can be dropped through this route.
    assert admin.delete("/v3/indices/vectors/chunks_pkey").status_code == 404


def test_default_name_follows_r2r(admin) -> None:
    r = admin.post("/v3/indices", json={"config": {"index_method": "ivfflat", "index_arguments": {"n_lists": 4}}})
    assert r.status_code == 202, r.text
    name = r.json()["results"]["message"].split()[1]
    assert name.startswith("ix_vector_cosine_ops_ivfflat__embedding_") and len(name.rsplit("_", 1)[1]) == 14
    _wait_valid(admin, name)
    admin.delete(f"/v3/indices/vectors/{name}")


import pytest  # noqa: E402


@pytest.mark.parametrize(
    "config, field",
    [
        ({"index_method": "hnsw", "index_arguments": {"m": 1}}, "index_arguments.m"),
        ({"index_method": "hnsw", "index_arguments": {"m": 16, "ef_construction": 20}}, "ef_construction"),
        ({"index_method": "ivfflat", "index_arguments": {"n_lists": 0}}, "n_lists"),
        ({"index_method": "ivfflat", "index_measure": "l1_distance"}, "index_measure"),
        ({"index_method": "hnsw", "index_arguments": {"lists": 3}}, "index_arguments"),
        ({"index_name": "Robert'); DROP TABLE chunks;--"}, "index_name"),
        ({"table_name": "users"}, "table_name"),
        ({"index_column": "text"}, "index_column"),
        ({"index_method": "btree"}, "index_method"),
    ],
)
def test_invalid_specs_are_422(admin, config: dict, field: str) -> None:
    r = admin.post("/v3/indices", json={"config": config})
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]["message"]
