"""The one settings loader shared by every service and command.

Environment variables use the prefix ``MMSEARCH_`` and ``__`` between sections, e.g.
``MMSEARCH_MODEL_SERVER__PORT=50001`` or ``MMSEARCH_MILVUS__URI=http://milvus:19530``. Command-line
flags override the environment; each service reads only its own section plus the shared ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK = "127.0.0.1"

# A file setting that may be left empty: deployment files pass `${VAR:-}`, and "" means "not set", not the current
# folder (which a plain Path would make of it).
OptionalPath = Annotated[Path | None, BeforeValidator(lambda v: None if v == "" else v)]
# Default ports, each written once: the sections below, the search service's targets and the local stack use them.
TOKENIZER_PORT, TOKENIZER_METRICS_PORT = 60051, 9101
MODEL_SERVER_PORT, MODEL_SERVER_METRICS_PORT = 50000, 9102
SEARCH_PORT = 8080
WEB_PORT = 8090
MILVUS_PORT = 19530
MONGO_PORT = 27017


class TokenizerSettings(BaseModel):
    host: str = LOOPBACK
    port: int = TOKENIZER_PORT
    metrics_port: int = TOKENIZER_METRICS_PORT
    max_message_mb: int = 32
    max_batch: int = 256  # texts or images per call
    max_image_mb: int = 20
    # Largest decoded image (pixels); bigger images are refused, not decoded (decompression bombs).
    max_image_pixels: int = 50_000_000
    workers: int = 8
    grace_seconds: float = 5.0
    # How often the repository folder is rescanned for new or re-exported models (0: only on demand).
    rescan_seconds: float = 10.0
    # TLS on the gRPC port: both set, the server answers only TLS (clients verify it against their CA file).
    tls_cert_file: OptionalPath = None
    tls_key_file: OptionalPath = None


class ModelServerSettings(BaseModel):
    host: str = LOOPBACK
    port: int = MODEL_SERVER_PORT
    metrics_port: int = MODEL_SERVER_METRICS_PORT
    max_message_mb: int = 64
    # "auto" picks CUDA when onnxruntime offers it, else CPU; or name providers explicitly.
    providers: list[str] = Field(default_factory=lambda: ["auto"])
    cuda_device_id: int = 0
    cuda_arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = "kNextPowerOfTwo"
    cuda_mem_limit_gb: float = 0.0  # 0: no limit
    intra_op_threads: int = 0  # 0: onnxruntime's default (all cores)
    inter_op_threads: int = 0
    batching: bool = True
    no_batching_models: list[str] = Field(default_factory=list)
    # Serve a model from another precision of its export, {key: "int8"} (the manifest's `variants`; `mmsearch
    # export ... --int8`); the others run their fp32 graph.
    variants: dict[str, str] = Field(default_factory=dict)
    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0
    max_queue_size: int = 512
    max_embed_texts: int = 256  # texts per Embed call, documents per ScorePairs call (the tokenizer's max_batch)
    # Batches of one model that may run at once (each is one ORT call); >1 overlaps ORT with the event loop.
    batch_concurrency: int = 1
    # Cut a batch where padding its rows to the next (longer) request would waste more than this many tokens
    # of compute, about the cost of one more ORT call; 0: cut only at max_batch_size.
    split_padding_tokens: int = 48
    # ORT worker threads spin while waiting for work: a little lower latency on dedicated cores, but measured
    # 1.5x the CPU per query when the cores are shared with the tokenizer and the search service (bench_serving).
    allow_spinning: bool = False
    warmup: bool = True
    # How often the repository folder is rescanned for new models (0: only on LoadModel).
    rescan_seconds: float = 10.0
    workers: int = 32
    grace_seconds: float = 5.0
    # TLS on the gRPC port (as the tokenizer's).
    tls_cert_file: OptionalPath = None
    tls_key_file: OptionalPath = None


class MilvusSettings(BaseModel):
    # A local Milvus Lite file (embedded) or a server URI such as http://127.0.0.1:19530.
    uri: str = "var/milvus.db"
    # "user:password" or an API key of a Milvus server with authentication on.
    token: SecretStr = SecretStr("")
    db_name: str = ""
    timeout_seconds: float = 10.0
    # TLS to a Milvus server (https:// URI): the CA that signed its certificate, and the name on it when the URI's
    # host differs; a client certificate and key for mutual TLS.
    tls_ca_file: OptionalPath = None
    tls_server_name: str = ""
    tls_client_cert_file: OptionalPath = None
    tls_client_key_file: OptionalPath = None


class MongoSettings(BaseModel):
    # Credentials may be in the URI (mongodb://user:pass@host/?authSource=admin) or below; TLS options too.
    uri: str = f"mongodb://{LOOPBACK}:{MONGO_PORT}"
    database: str = "mmsearch"
    timeout_ms: int = 3000
    username: str = ""
    password: SecretStr = SecretStr("")
    # TLS: the CA that signed the server's certificate (turns TLS on), and a client certificate + key (one PEM
    # file) for mutual TLS.
    tls_ca_file: OptionalPath = None
    tls_client_cert_key_file: OptionalPath = None


class SearchSettings(BaseModel):
    host: str = LOOPBACK
    port: int = SEARCH_PORT
    tokenizer_target: str = f"{LOOPBACK}:{TOKENIZER_PORT}"
    model_server_target: str = f"{LOOPBACK}:{MODEL_SERVER_PORT}"
    config_source: Literal["file", "consul"] = "file"
    config_file: Path = Path("deploy/ab-config.yaml")
    consul_host: str = LOOPBACK
    consul_port: int = 8500
    consul_scheme: str = "http"
    consul_token: str = ""
    consul_key: str = "config/test/multimodal-config"
    # Where the last config that passed validation is kept, to start when Consul is unreachable.
    last_good_config: Path = Path("var/search/last-good-config.yaml")
    max_query_chars: int = 512
    max_top_k: int = 200
    # Deepest page served (request field offset); every matcher searches offset + topK deep.
    max_offset: int = 1000
    max_upload_mb: int = 8
    stage_timeout_seconds: float = 3.0
    # Threads of each blocking store client (Milvus and MongoDB writes, admin calls, keys, journal): calls beyond
    # this many at once wait for one. Searches and document fetches use the asyncio clients and need none
    # (bench_store_clients); 32 was chosen when searches used these threads (bench_store_threads, RESULTS.md).
    store_threads: int = Field(default=32, ge=1)
    # Online outcomes (collections exposures and events in mongo.database). Off: no exposure documents (the log
    # line stays) and POST /feedback answers 503 outcomes_disabled.
    record_outcomes: bool = True
    # Exposures and feedback events are kept this long (TTL indexes).
    outcomes_ttl_days: int = Field(default=30, ge=1)
    # Exposures wait here for their MongoDB write, off the request path; past this many, new ones are dropped
    # and counted (mmsearch_search_exposures_lost_total) while searches keep answering.
    exposure_queue_size: int = Field(default=10_000, ge=1)
    # Bodies of the JSON routes (search, feedback) larger than this are refused with 413 before parsing.
    max_json_body_kb: int = Field(default=64, ge=1)
    # Query embeddings kept in memory (LRU, per search process) so a repeated query skips the tokenizer and the
    # model server; 0 turns the cache off. An experiment opts out with `queryCache: false` in its match args.
    query_cache_size: int = Field(default=10_000, ge=0)
    # An entry older than this is computed again (a bound on how stale it can be, beside the version check).
    query_cache_ttl_seconds: float = Field(default=600.0, gt=0)
    # TLS to the tokenizer and model server: the CA that signed their certificates (turns TLS on), and the name on
    # the certificates when the targets' host names differ (an IP address, a load balancer).
    grpc_tls_ca_file: OptionalPath = None
    grpc_tls_server_name: str = ""


Scope = Literal["search", "feedback", "documents", "admin", "metrics"]
SCOPES: tuple[Scope, ...] = ("search", "feedback", "documents", "admin", "metrics")


class AuthSettings(BaseModel):
    """Access control of the search service (env MMSEARCH_AUTH__<NAME>): API keys with scopes, stored hashed in
    MongoDB (`mmsearch keys`), and rate limits. services/search/auth/ says how each is checked."""

    # keys: every route but /health needs a key with the route's scope (or one of anonymous_scopes). off: every
    # route is open; the service refuses to start so on an address other than loopback unless insecure_no_auth.
    mode: Literal["off", "keys"] = "keys"
    insecure_no_auth: bool = False
    # Scopes granted to requests without a key, rate-limited per client address (the local stack: ["search"]).
    anonymous_scopes: list[Scope] = Field(default_factory=list)
    # MongoDB collection (in mongo.database) of the keys.
    collection: str = "keys"
    # A key read from MongoDB is trusted this long: a revoked or rotated key stops working at most this many
    # seconds after `mmsearch keys revoke`; while MongoDB is down, cached keys keep working this long.
    key_cache_seconds: float = Field(default=5.0, gt=0)
    # Requests per second and burst of a key that sets none (`keys create --rate --burst`): high enough that a
    # server-side key in front of many users (a web UI) is not throttled in normal use; set tighter ones per key.
    default_rate: float = Field(default=500.0, gt=0)
    default_burst: int = Field(default=1000, ge=1)
    # Requests per second and burst per client address for requests without a key (anonymous_scopes).
    anonymous_rate: float = Field(default=20.0, gt=0)
    anonymous_burst: int = Field(default=40, ge=1)
    # Failed authentications one address may make at once, then one more per this many seconds; past that its
    # requests with a key get 429 before the key is looked at (guessing, and MongoDB look-ups of made-up keys).
    failed_auth_burst: int = Field(default=10, ge=1)
    failed_auth_refill_seconds: float = Field(default=10.0, gt=0)
    # Addresses whose buckets are kept (least recently seen dropped first): bounds memory under many addresses.
    max_tracked_addresses: int = Field(default=100_000, ge=1)
    # How often the keys' last-used times are written to MongoDB (one write per used key, not per request).
    last_used_flush_seconds: float = Field(default=30.0, gt=0)
    # An admin key held only in the service's memory (never in MongoDB), from a secret: production deployments
    # start with it. The file wins over the value.
    bootstrap_key: SecretStr | None = None
    bootstrap_key_file: OptionalPath = None


class DocumentsSettings(BaseModel):
    """Live documents (env MMSEARCH_DOCUMENTS__<NAME>): the search service's documents API and the applier that
    carries accepted writes from MongoDB's change journal into Milvus. services/search/documents/ says how."""

    # Items one POST .../documents:batch may hold.
    max_batch: int = Field(default=128, ge=1, le=10_000)
    # Bytes of one document's JSON (its fields); larger is 413. A request body (a batch) may hold max_body_mb.
    max_document_kb: int = Field(default=256, ge=1)
    max_body_mb: int = Field(default=16, ge=1)
    # How long a `wait=true` write waits to be searchable before answering 503 (the write stays pending).
    wait_seconds: float = Field(default=15.0, gt=0)
    # One replica at a time applies a corpus's journal, holding a lease this long (renewed while it works): a
    # replica killed while holding it hands the corpus to another within this time.
    lease_seconds: float = Field(default=10.0, gt=0)
    # Journal entries applied per Milvus call, and how often an idle applier looks for pending ones.
    apply_batch: int = Field(default=256, ge=1)
    poll_seconds: float = Field(default=0.5, gt=0)
    # Applied rows wait in Milvus' growing segments until a flush seals them; Milvus Lite searches those by brute
    # force (5k of them made a search 17x slower here), so the applier flushes a corpus once this many rows or
    # seconds have gathered since its last flush.
    flush_rows: int = Field(default=2048, ge=1)
    flush_seconds: float = Field(default=5.0, gt=0)
    # Photos written live to an image corpus are kept in this folder as `<corpus>-<id>.<ext>` and their document's
    # url is image_base_url/<that name> (serve the folder there: the web UI serves web.image_dir at /images).
    # Unset: image corpora take no live writes.
    image_dir: OptionalPath = None
    image_base_url: str = ""
    # MongoDB collections (in mongo.database) of the journal, its sequence counter and the corpus leases.
    journal_collection: str = "changes"
    counters_collection: str = "counters"
    leases_collection: str = "change_leases"


class WebSettings(BaseModel):
    host: str = LOOPBACK
    port: int = WEB_PORT
    search_url: str = f"http://{LOOPBACK}:{SEARCH_PORT}"
    max_upload_mb: int = 8
    request_timeout_seconds: float = 15.0
    threads: int = 8
    # Results asked for when the page does not say (the search service caps it at search.max_top_k).
    default_top_k: int = 20
    # A local photo folder served at /images/<name> (the local stack's demo photos); None: not served.
    image_dir: Path | None = None
    # Extra sources allowed for result images in the page's Content-Security-Policy img-src
    # ('self', data: and blob: are always allowed). Narrow this to your image host in production.
    image_sources: list[str] = Field(default_factory=lambda: ["https:", "http:"])
    # Mark the user-id cookie Secure (set when the UI is served over HTTPS behind a proxy).
    secure_cookies: bool = False
    # The UI's own key for the search service (scopes search and feedback; documents for "Add photos"), kept on the
    # server, never sent to the browser. The file wins over the value; neither: the UI calls without a key.
    api_key: SecretStr | None = None
    api_key_file: OptionalPath = None
    # The image corpus "Add photos" writes to (the text-to-image scene's).
    photos_corpus: str = "photos"


class SparkSettings(BaseModel):
    """`--engine spark` of the offline jobs (env MMSEARCH_SPARK__<NAME>)."""

    # local[N] (this machine, N cores), spark://host:7077 (a standalone cluster) or k8s://https://host:443.
    master: str = "local[*]"
    partitions: int = Field(default=0, ge=0)  # 0: one per shard
    # Extra Spark properties, e.g. {"spark.executor.memory": "4g"} (env MMSEARCH_SPARK__CONF as JSON).
    conf: dict[str, str] = Field(default_factory=dict)
    # The executors' interpreter; "" = this one (the project's), which local[N] and the offline image share.
    python: str = ""


class LocalSettings(BaseModel):
    """`mmsearch local up`: the whole stack on this machine (env MMSEARCH_LOCAL__<NAME>). It passes the ports it
    uses to each service through that service's own section."""

    var_dir: Path = Path("var")
    # Text-to-image: a Hugging Face hub id or a local folder with CLIP weights; "" turns it off (as --no-clip).
    # A hub id is used when the hub answers within hub_probe_seconds, or from the local Hugging Face cache.
    clip_source: str = "openai/clip-vit-base-patch32"
    hub_probe_seconds: float = 3.0
    milvus_port: int = MILVUS_PORT
    mongo_port: int = MONGO_PORT
    tokenizer_port: int = TOKENIZER_PORT
    tokenizer_metrics_port: int = TOKENIZER_METRICS_PORT
    model_port: int = MODEL_SERVER_PORT
    model_metrics_port: int = MODEL_SERVER_METRICS_PORT
    search_port: int = SEARCH_PORT
    web_port: int = WEB_PORT
    ready_timeout_seconds: float = 600.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MMSEARCH_", env_nested_delimiter="__", extra="ignore", frozen=True)

    model_repo: Path = Path("models")
    log_level: str = "INFO"
    log_json: bool = False
    tokenizer: TokenizerSettings = Field(default_factory=TokenizerSettings)
    model_server: ModelServerSettings = Field(default_factory=ModelServerSettings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    documents: DocumentsSettings = Field(default_factory=DocumentsSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    local: LocalSettings = Field(default_factory=LocalSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)


def load_settings() -> Settings:
    return Settings()


def mongo_settings(uri: str | None, database: str | None) -> MongoSettings:
    """A command's --mongo-uri / --database flags over the environment (MMSEARCH_MONGO__URI, __DATABASE) over
    defaults: what every command that writes or reads MongoDB connects with."""
    base = load_settings().mongo
    update = {k: v for k, v in {"uri": uri, "database": database}.items() if v is not None}
    return base.model_copy(update=update)
