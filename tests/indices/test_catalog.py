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
