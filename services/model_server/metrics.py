"""Model server metrics: the common per-method ones plus batching (batch size, queue wait, queue depth)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram

from mmsearch.grpc_common.metrics import LATENCY_BUCKETS, RpcMetrics


class ServingMetrics(RpcMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("mmsearch_model_server", registry)
        self.batch_size = Histogram(
            "mmsearch_model_server_batch_size",
            "Rows per ONNX Runtime call (several requests batched together).",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )
        self.requests_per_batch = Histogram(
            "mmsearch_model_server_requests_per_batch",
            "Requests served by one ONNX Runtime call.",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=registry,
        )
        self.queue_wait = Histogram(
            "mmsearch_model_server_queue_wait_seconds",
            "Time a request waited in its model's batching queue.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            "mmsearch_model_server_inference_seconds",
            "Duration of one ONNX Runtime call.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "mmsearch_model_server_queue_depth", "Requests waiting in a model's queue.", ["model"], registry=registry
        )
        self.model_state = Gauge(
            "mmsearch_model_server_model_state",
            "1 for the model's current state (loading, loaded, unloaded, failed), 0 for the others.",
            ["model", "state"],
            registry=registry,
        )
