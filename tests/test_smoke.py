import httpx


def test_health_needs_no_credentials(base_url: str) -> None:
    resp = httpx.get(f"{base_url}/v3/health")
    assert resp.status_code == 200
    assert resp.json() == {"results": {"message": "ok"}}
