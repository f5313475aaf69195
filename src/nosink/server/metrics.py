"""Prometheus metrics of one server (its own registry, so that several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)


class ServerMetrics:
    """Requests and errors by route and code, latency, batch sizes and tokens, queue depth, dropped inputs."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("route", "code")
        self.requests = Counter("nosink_requests", "HTTP requests", labels, registry=self.registry)
        self.errors = Counter("nosink_request_errors", "HTTP requests answered 4xx/5xx", labels, registry=self.registry)
        self.latency = Histogram(
            "nosink_request_latency_seconds",
            "request latency",
            ("route",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "nosink_batch_size", "inputs per model batch", buckets=_SIZE_BUCKETS, registry=self.registry
        )
        self.batch_tokens = Histogram(
            "nosink_batch_tokens", "tokens per model batch", buckets=_TOKEN_BUCKETS, registry=self.registry
        )
        self.model_seconds = Counter("nosink_model_seconds", "time the model spent on batches", registry=self.registry)
        self.queue_rows = Gauge("nosink_queue_inputs", "inputs waiting for the model", registry=self.registry)
        self.queue_tokens = Gauge("nosink_queue_tokens", "tokens waiting for the model", registry=self.registry)
        self.dropped_inputs = Counter(
            "nosink_dropped_inputs",
            "inputs of cancelled requests (their client went away), dropped before any model call",
            registry=self.registry,
        )

    def observe_request(self, route: str, code: int, seconds: float) -> None:
        self.requests.labels(route, str(code)).inc()
        if code >= 400:
            self.errors.labels(route, str(code)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, rows: int, tokens: int, seconds: float) -> None:
        self.batch_size.observe(rows)
        self.batch_tokens.observe(tokens)
        self.model_seconds.inc(seconds)

    def observe_drop(self, rows: int) -> None:
        self.dropped_inputs.inc(rows)

    def set_queue(self, rows: int, tokens: int) -> None:
        self.queue_rows.set(rows)
        self.queue_tokens.set(tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
