"""Prometheus metrics of a gRPC service, served over HTTP on their own port beside the gRPC one."""

from __future__ import annotations

import logging
from threading import Thread
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

log = logging.getLogger(__name__)

# Latencies of a tokenizer call (~0.1 ms) up to a big CPU batch (seconds).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RpcMetrics:
    """Per method and model: requests, latency and errors by status code."""

    def __init__(self, namespace: str, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            f"{namespace}_requests", "Requests by method and model.", ["method", "model"], registry=registry
        )
        self.latency = Histogram(
            f"{namespace}_request_seconds",
            "Time from request received to reply, by method and model.",
            ["method", "model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            f"{namespace}_errors",
            "Failed requests by method, model and gRPC status code.",
            ["method", "model", "code"],
            registry=registry,
        )

    def observe(self, method: str, model: str, code: grpc.StatusCode, seconds: float) -> None:
        self.requests.labels(method, model).inc()
        self.latency.labels(method, model).observe(seconds)
        if code != grpc.StatusCode.OK:
            self.errors.labels(method, model, code.name).inc()


class MetricsPortError(RuntimeError):
    pass


class MetricsHttpServer:
    """prometheus_client's HTTP exporter, bound to the same host as the gRPC server."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self.host, self.port, self.registry = host, port, registry
        self._server: WSGIServer | None = None
        self._thread: Thread | None = None

    def start(self) -> None:
        try:
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            raise MetricsPortError(f"cannot serve metrics on {self.host}:{self.port}: {exc}") from exc
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
