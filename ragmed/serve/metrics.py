"""Prometheus metrics of the service (``GET /metrics``), on a registry of its own (prometheus-client)."""
from __future__ import annotations


class Metrics:
    def __init__(self, admission=None):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ragmed_requests_total", "HTTP requests answered", ["route", "method", "status"],
                                registry=r)
        self.latency = Histogram("ragmed_request_seconds", "HTTP request latency", ["route"], registry=r,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.errors = Counter("ragmed_errors_total", "Requests answered with an error, by error type", ["type"],
                              registry=r)
        self.rejected = Counter("ragmed_rejected_total", "Requests refused before work started", ["reason"],
                                registry=r)
        self.evidence = Histogram("ragmed_evidence_items", "Evidence items per answer", registry=r,
                                  buckets=(0, 1, 2, 3, 5, 8, 13, 21))
        self.insufficient = Counter("ragmed_insufficient_evidence_total", "Answers that abstained", registry=r)
        self.feedback = Counter("ragmed_cds_feedback_total", "CDS Hooks feedback received", ["outcome"], registry=r)
        self.reloads = Counter("ragmed_index_reloads_total", "Index versions loaded while serving", ["result"],
                               registry=r)
        if admission is not None:
            g = Gauge("ragmed_queue_depth", "Admitted requests waiting for a worker", registry=r)
            g.set_function(lambda: admission.waiting)
            g2 = Gauge("ragmed_in_flight", "Admitted requests (running + waiting)", registry=r)
            g2.set_function(lambda: admission.admitted)

    def observe(self, route: str, method: str, status: int, seconds: float, error: str | None) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if error:
            self.errors.labels(error).inc()

    def answer(self, n_evidence: int, insufficient: bool) -> None:
        self.evidence.observe(n_evidence)
        if insufficient:
            self.insufficient.inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
