"""The small pieces: percentiles from histograms, status classes, who a request is from."""

from __future__ import annotations

import hashlib
import uuid

from ragkeep.auth.tokens import TokenIssuer
from ragkeep.monitoring.activity import Caller, caller_from_headers
from ragkeep.monitoring.prom import status_class
from ragkeep.monitoring.searches import LATENCY_BOUNDS_MS, hist_percentile, latency_bucket


def test_hist_percentile_is_the_bucket_upper_bound_or_the_max_seen() -> None:
    hist = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    for ms in [3.0] * 90 + [40.0] * 9 + [9000.0]:
        hist[latency_bucket(ms)] += 1
    assert hist_percentile(hist, 0.5) == 5 and hist_percentile(hist, 0.95) == 50
    assert hist_percentile(hist, 1.0) is None  # past the last bound, with no max known
    assert hist_percentile(hist, 1.0, max_ms=9000.0) == 9000.0
    assert hist_percentile(hist, 0.5, max_ms=3.5) == 3.5  # the slowest seen bounds it tighter
    assert hist_percentile([0] * len(hist), 0.5) is None


def test_status_classes() -> None:
    statuses = (200, 201, 302, 404, 429, 500, 503)
    assert [status_class(s) for s in statuses] == ["2xx", "2xx", "3xx", "4xx", "4xx", "5xx", "5xx"]


def test_callers_from_tokens_and_keys() -> None:
    issuer = TokenIssuer("x" * 64, 60, 7)
    user = uuid.uuid4()
    token = issuer.issue(user, "access")
    assert caller_from_headers({"authorization": f"Bearer {token}"}, issuer) == Caller(user_id=user)
    other = TokenIssuer("y" * 64, 60, 7)  # another server's secret: not a caller
    assert caller_from_headers({"authorization": f"Bearer {token}"}, other) is None
    refresh = issuer.issue(user, "refresh")  # only access tokens authenticate requests
    assert caller_from_headers({"authorization": f"Bearer {refresh}"}, issuer) is None
    key_id = uuid.uuid4()
    got = caller_from_headers({"x-api-key": f"rk_{key_id.hex}.s3cret"}, issuer)
    assert got == Caller(key_id=key_id, key_hash=hashlib.sha256(b"s3cret").digest())
    for bad in ("nonsense", "rk_nothex.s", "rk_" + key_id.hex):
        assert caller_from_headers({"x-api-key": bad}, issuer) is None
    assert caller_from_headers({"authorization": "Basic abc"}, issuer) is None
    assert caller_from_headers({"authorization": "Bearer not-a-jwt"}, issuer) is None


def test_metrics_without_a_token_answer_loopback_only(base_url: str) -> None:
    """No [metrics] prometheus_token: this machine may scrape, another may not."""
    import httpx
    from starlette.requests import Request

    from ragkeep.api.routes.metrics import _loopback

    assert httpx.get(f"{base_url}/metrics").status_code == 200  # the session server has no token
    for host, ok in (("127.0.0.1", True), ("::1", True), ("10.0.0.5", False), ("testclient", False)):
        assert _loopback(Request({"type": "http", "client": (host, 1234), "headers": []})) is ok
