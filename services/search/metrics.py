"""Prometheus metrics of one search app (own registry, so several apps can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class SearchMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "mmsearch_search_stage_seconds",
            "Time per pipeline stage.",
            ["scene", "stage", "experiment"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.request_seconds = Histogram(
            "mmsearch_search_request_seconds", "End-to-end search time.", ["scene"], buckets=_STAGE_BUCKETS, registry=r
        )
        self.requests = Counter("mmsearch_search_requests", "Search requests.", ["scene", "status"], registry=r)
        self.experiment_requests = Counter(
            "mmsearch_search_experiment_requests",
            "Requests served per layer experiment.",
            ["scene", "layer", "experiment"],
            registry=r,
        )
        self.experiment_errors = Counter(
            "mmsearch_search_experiment_errors",
            "Failed requests per layer experiment.",
            ["scene", "layer", "experiment"],
            registry=r,
        )
        self.dependency_errors = Counter(
            "mmsearch_search_dependency_errors",
            "Calls that failed or timed out, per dependency.",
            ["dependency"],
            registry=r,
        )
        self.missing_summaries = Counter(
            "mmsearch_search_missing_summaries", "Hits whose MongoDB document was missing.", ["scene"], registry=r
        )
        self.documents_pending = Gauge(
            "mmsearch_documents_pending",
            "Accepted document writes not yet applied to Milvus, per corpus (the backlog while Milvus is down).",
            ["corpus"],
            registry=r,
        )
        self.documents_applied = Counter(
            "mmsearch_documents_applied",
            "Journal entries this replica settled: applied, stale (a higher version came first), failed (a reason).",
            ["corpus", "result"],
            registry=r,
        )
        self.config_reloads = Counter("mmsearch_search_config_reloads", "A/B configs applied.", ["source"], registry=r)
        self.config_rejections = Counter(
            "mmsearch_search_config_rejections",
            "A/B configs refused (the last good one kept serving).",
            ["source"],
            registry=r,
        )
        self.config_source_up = Gauge(
            "mmsearch_search_config_source_up", "1 while the config source (file or Consul) answers.", registry=r
        )
        self.query_cache_lookups = Counter(
            "mmsearch_search_query_cache_lookups",
            "Query-embedding cache lookups by embedding model and result (hit: no tokenizer or model server call).",
            ["model", "result"],
            registry=r,
        )
        self.query_cache_invalidations = Counter(
            "mmsearch_search_query_cache_invalidations",
            "Cached query embeddings dropped because the model server reported a new model version.",
            ["model"],
            registry=r,
        )
        self.query_cache_evictions = Counter(
            "mmsearch_search_query_cache_evictions",
            "Least recently used entries dropped from a full cache.",
            registry=r,
        )
        self.query_cache_entries = Gauge(
            "mmsearch_search_query_cache_entries", "Query embeddings held by the cache.", registry=r
        )
        self.rank_fallbacks = Counter(
            "mmsearch_search_rank_fallbacks",
            "Requests whose ranker could not run (a cross-encoder past timeoutMs or unavailable) and kept the "
            "incoming order.",
            ["scene", "layer", "experiment"],
            registry=r,
        )
        # Online outcomes (services/search/outcomes): what reached MongoDB, what did not, and the feedback.
        self.exposures = Counter(
            "mmsearch_search_exposures",
            "Exposures (answered searches) stored in MongoDB, per layer experiment.",
            ["scene", "layer", "experiment"],
            registry=r,
        )
        self.exposures_lost = Counter(
            "mmsearch_search_exposures_lost",
            "Exposures not stored: queue_full (MongoDB slower than traffic) or mongodb (writes kept failing).",
            ["reason"],
            registry=r,
        )
        self.exposure_queue = Gauge(
            "mmsearch_search_exposure_queue", "Exposures waiting for their MongoDB write.", registry=r
        )
        self.feedback_events = Counter(
            "mmsearch_search_feedback_events",
            "Feedback events stored (duplicates not counted), per layer experiment of the search they answer.",
            ["scene", "layer", "experiment", "event"],
            registry=r,
        )
        self.feedback_rejected = Counter(
            "mmsearch_search_feedback_rejected",
            "Feedback not stored: unknown_request and item_not_shown (4xx), duplicate (200, recorded false).",
            ["reason"],
            registry=r,
        )
        # Access control (services/search/auth): never a secret, never a key id that is not a stored key's.
        self.auth_requests = Counter(
            "mmsearch_auth_requests",
            "Requests by what their authentication came to: ok (a key), anonymous, open (auth off or /health), "
            "missing, invalid, expired, revoked, rotated, forbidden, rate_limited, locked_out, unavailable.",
            ["result"],
            registry=r,
        )
        self.auth_key_requests = Counter(
            "mmsearch_auth_key_requests", "Requests let through per key id and scope.", ["key_id", "scope"], registry=r
        )
        self.auth_rate_limited = Counter(
            "mmsearch_auth_rate_limited",
            "Requests refused with 429 by a rate limit, per key id (anonymous: the per-address limits).",
            ["key_id"],
            registry=r,
        )
        self.auth_cached_keys = Gauge("mmsearch_auth_cached_keys", "Key ids held by the key cache.", registry=r)
