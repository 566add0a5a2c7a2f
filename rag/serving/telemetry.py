"""Prometheus metrics of the query service, in a registry of its own (``GET /metrics``).

With ``serve.workers`` above 1, each worker process counts its own requests and a scrape reaches one
of them: scrape each worker, or run one worker per container (the Kubernetes manifest does).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

#: latency buckets (seconds): a query is an encode (~10-40 ms here) plus a search (~1 ms)
BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class Telemetry:
    """The service's counters, histogram and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ragops_requests", "HTTP requests served, by route and status.",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("ragops_request_seconds", "Time to answer a request, by route.", ["route"],
                                 buckets=BUCKETS, registry=self.registry)
        self.errors = Counter("ragops_errors", "Error responses, by kind.", ["kind"], registry=self.registry)
        self.swaps = Gauge("ragops_swaps", "Alias moves this process followed.", registry=self.registry)
        self.live = Info("ragops_live", "The build answering searches.", registry=self.registry)
        self.ready = Gauge("ragops_ready", "1 when the service answers searches.", registry=self.registry)
        self.query_log_dropped = Gauge("ragops_query_log_dropped", "Query vectors not logged: the queue was full.",
                                       registry=self.registry)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
