"""``POST /v3/indices/tenants/{user_id}/isolate`` and ``ragkeep tenant isolate`` on a single node:
the user's own partial HNSW index is built through the tenant-promotion path, then kept."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg

from tests.cli.test_index_cli import run as run_cli
from tests.indices.seed import seeded


def _drop(settings, owner: uuid.UUID) -> None:
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT index_name FROM tenant_indexes WHERE owner_id = %s", (owner,)).fetchall():
            conn.execute(f'DROP INDEX IF EXISTS "{name}"')
        conn.execute("DELETE FROM tenant_indexes WHERE owner_id = %s", (owner,))


def _wait_valid(admin, name: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ix = admin.get(f"/v3/indices/vectors/{name}").json()["results"]["index"]
        if ix["status"] == "valid" and (ix["build"] or {}).get("state") != "building":
            return ix
        time.sleep(0.1)
    raise AssertionError(f"index {name} did not become valid: {ix}")


def test_isolate_builds_the_users_partial_index_then_keeps_it(admin, make_user, settings, base_url, tmp_path) -> None:
    user = make_user("isolate")
    with seeded(settings.database.url, user.id, 400):
        try:
            r = admin.post(f"/v3/indices/tenants/{user.id}/isolate")
            assert r.status_code == 202, r.text
            out = r.json()["results"]
            assert out["mode"] == "single_node" and out["shard_id"] is None and out["node"] is None
            name = out["partial_index"]
            assert name.endswith("_" + user.id.hex[:8]) and out["build"]["rows"] == 400
            ix = _wait_valid(admin, name)
            assert ix["owner_id"] == str(user.id) and str(user.id) in ix["predicate"]
            # Asked again (here through the CLI and the client): the index is kept, nothing is built.
            r = run_cli(["tenant", "isolate", str(user.id)], tmp_path, base_url)
            assert r.exit_code == 0, r.output
            assert f"keeps their own index {name} (valid)" in r.stdout
            again = admin.post(f"/v3/indices/tenants/{user.id}/isolate", json={})
            assert again.status_code == 200, again.text
            kept = again.json()["results"]
            assert (kept["partial_index"], kept["partial_index_status"], kept["build"]) == (name, "valid", None)
            with psycopg.connect(settings.database.url) as conn:
                owned = conn.execute("SELECT index_name FROM tenant_indexes WHERE owner_id = %s", (user.id,)).fetchall()
            assert owned == [(name,)]
        finally:
            _drop(settings, user.id)


def test_isolate_refusals(admin, make_user, base_url, tmp_path: Path) -> None:
    user = make_user("isolate-no")
    assert admin.post(f"/v3/indices/tenants/{uuid.uuid4()}/isolate").status_code == 404
    assert admin.post("/v3/indices/tenants/not-a-uuid/isolate").status_code == 422
    r = admin.post(f"/v3/indices/tenants/{user.id}/isolate", json={"node": "127.0.0.1:5432"})
    assert r.status_code == 422 and "single PostgreSQL node" in r.text
    r = admin.post(f"/v3/indices/tenants/{user.id}/isolate", json={"node": "no-port"})
    assert r.status_code == 422 and "host:port" in r.text
    assert admin.post(f"/v3/indices/tenants/{user.id}/isolate", json={"nodes": "x"}).status_code == 422
    assert user.client.post(f"/v3/indices/tenants/{user.id}/isolate").status_code == 403
    r = run_cli(["tenant", "isolate", "nope"], tmp_path, base_url)
    assert r.exit_code == 2 and "not a valid user id" in r.stderr
    r = run_cli(["tenant", "isolate", str(uuid.uuid4())], tmp_path, base_url)
    assert r.exit_code == 1 and "404" in r.stderr
