"""The service's Prometheus metrics (prometheus_client): requests, errors, latency, images, batches, queue."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ROUTES", "Metrics"]

ROUTES = ("/v1/score", "/v1/models", "/healthz", "/metrics")  # metric labels: any other path counts as "other"


class Metrics:
    """The service's Prometheus metrics, in a registry of their own (several services may share a process)."""

    def __init__(self) -> None:
        """Register every metric (prometheus_client adds `_total` to counters)."""
        self.registry = CollectorRegistry()
        by_status = ["route", "status"]
        self.requests = Counter("gamma_iqa_requests", "HTTP requests answered", by_status, registry=self.registry)
        self.errors = Counter(
            "gamma_iqa_errors", "HTTP requests answered with status >= 400", by_status, registry=self.registry
        )
        self.latency = Histogram(
            "gamma_iqa_request_seconds",
            "Time from a request's arrival to its answer, in seconds",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.images = Counter(
            "gamma_iqa_images", "Images answered, scored or failed", ["outcome"], registry=self.registry
        )
        self.batch = Histogram(
            "gamma_iqa_batch_images",
            "Images the device worker scored in one round of forwards (merged across requests)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.queue = Gauge("gamma_iqa_queue_images", "Images admitted and not yet answered", registry=self.registry)
        self.in_flight = Gauge("gamma_iqa_requests_in_flight", "Requests being answered", registry=self.registry)

    def request(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request of `path` with `status`, taking `seconds`."""
        route = path if path in ROUTES else "other"
        self.requests.labels(route, str(status)).inc()
        if status >= 400:
            self.errors.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def text(self) -> bytes:
        """The metrics in Prometheus's text format."""
        return generate_latest(self.registry)
