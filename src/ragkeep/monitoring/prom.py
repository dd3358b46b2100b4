"""This process's Prometheus metrics: requests and searches, counted as they happen.

Each server process keeps its own registry (not prometheus-client's global one, nor its
multiprocess mode): ragkeep runs one process per replica, each replica is scraped on its own, and
Prometheus sums them (``sum by (route) (rate(...))``). A registry per app also lets several apps
live in one process, as the tests do. Labels are of low cardinality only: route templates, never
raw paths; kinds and strategies; status classes. No user id ever becomes a label (per-user figures
are in PostgreSQL, see ``GET /v3/system/stats``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Seconds; covers a 1 ms health check to a 60 s synchronous upload.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Seconds; searches are mostly 1-100 ms.
SEARCH_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
#: Vectors in a search's scope: around the planner's exact threshold (20,000) and beyond.
VECTOR_BUCKETS = (0, 100, 1_000, 5_000, 10_000, 20_000, 50_000, 100_000, 1_000_000, 10_000_000)

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def status_class(status: int) -> str:
    """``2xx`` ...: the label and column for a status code (exact codes would add little)."""
    return f"{max(1, min(status // 100, 5))}xx"


class ProcessMetrics:
    """The counters and histograms this process updates; scraped through :mod:`.exposition`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "ragkeep_http_requests", "HTTP requests answered, by route template and status class.",
            ["method", "route", "status"], registry=r,
        )
        self.request_seconds = Histogram(
            "ragkeep_http_request_duration_seconds", "Time to answer an HTTP request (until the body is sent).",
            ["method", "route", "status"], buckets=REQUEST_BUCKETS, registry=r,
        )
        self.in_progress = Gauge(
            "ragkeep_http_requests_in_progress", "HTTP requests being answered now.", registry=r
        )
        self.search_seconds = Histogram(
            "ragkeep_search_duration_seconds", "Server time of a search (query embedding included), by plan.",
            ["kind", "strategy"], buckets=SEARCH_BUCKETS, registry=r,
        )
        self.search_vectors = Histogram(
            "ragkeep_search_vectors", "Vectors in a search's scope as the planner saw it (vectors searched per query).",
            ["kind", "strategy"], buckets=VECTOR_BUCKETS, registry=r,
        )
        self.search_fallbacks = Counter(
            "ragkeep_search_exact_fallbacks",
            "Index searches that came back short and were answered by the exact scan.",
            ["kind"], registry=r,
        )
        self.search_short = Counter(
            "ragkeep_search_short_results", "Searches that returned fewer rows than asked.", ["kind"], registry=r
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method if method in METHODS else "OTHER", route, status_class(status))
        self.requests.labels(*labels).inc()
        self.request_seconds.labels(*labels).observe(seconds)

    def observe_search(
        self, kind: str, strategy: str, total_ms: float, scope_size: int, short: bool, fallback: bool
    ) -> None:
        self.search_seconds.labels(kind, strategy).observe(total_ms / 1000)
        self.search_vectors.labels(kind, strategy).observe(max(scope_size, 0))
        if fallback:
            self.search_fallbacks.labels(kind).inc()
        if short:
            self.search_short.labels(kind).inc()
