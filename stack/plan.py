"""One typed record of a local stack: ports, folders, models and corpora, written to var/local/plan.json.

`mmsearch local up` computes it once; the setup process, `mmsearch local status` and the test fixture read
it back, so nobody re-derives a port or a path on their own.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

LOOPBACK = "127.0.0.1"
PLAN_FILE = "plan.json"
READY_FILE = "ready.json"
DATA_READY_FILE = "data-ready"


class Ports(BaseModel):
    model_config = ConfigDict(frozen=True)

    milvus: int
    mongo: int
    tokenizer: int
    tokenizer_metrics: int
    model: int
    model_metrics: int
    search: int
    web: int

    def by_role(self) -> dict[str, tuple[int, str]]:
        """Port, and the flag that changes it, per role (for messages that say what to do)."""
        return {
            "Milvus Lite server": (self.milvus, "--milvus-port"),
            "SecantusDB (MongoDB)": (self.mongo, "--mongo-port"),
            "tokenizer service": (self.tokenizer, "--tokenizer-port"),
            "tokenizer metrics": (self.tokenizer_metrics, "--tokenizer-metrics-port"),
            "model server": (self.model, "--model-port"),
            "model server metrics": (self.model_metrics, "--model-metrics-port"),
            "search service": (self.search, "--search-port"),
            "web UI": (self.web, "--web-port"),
        }


class Corpus(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str  # the Milvus alias and MongoDB collection
    kind: str  # "qa" or "images"
    source: Path  # jsonl (qa) or a folder of photos (images)
    model_key: str  # the model whose vectors go into Milvus
    field_map: str = ""  # qa: `ingest --map` when the raw file's field names are not question/answer/category


class StackPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    root: Path  # the checkout: cwd of every process
    var_dir: Path
    model_repo: Path
    ab_config: Path
    ports: Ports
    text_model: str
    clip_text_model: str | None  # None: text-to-image is off
    clip_image_model: str | None
    corpora: list[Corpus]
    clip_off_reason: str | None = None  # why text-to-image is off, in one line
    bin_dir: Path  # where mmsearch, milvus-lite and secantusd-py are installed
    ready_timeout_seconds: float

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def run_dir(self) -> Path:
        return self.var_dir / "local"

    @property
    def logs_dir(self) -> Path:
        return self.var_dir / "logs"

    @property
    def milvus_dir(self) -> Path:
        return self.var_dir / "milvus"

    @property
    def mongo_dir(self) -> Path:
        return self.var_dir / "mongo"

    @property
    def keys_dir(self) -> Path:
        return self.run_dir / "keys"

    @property
    def demo_dir(self) -> Path:
        return self.var_dir / "demo"

    @property
    def photos_dir(self) -> Path:
        return self.demo_dir / "photos"

    @property
    def milvus_uri(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.milvus}"

    @property
    def mongo_uri(self) -> str:
        return f"mongodb://{LOOPBACK}:{self.ports.mongo}"

    @property
    def search_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.search}"

    @property
    def web_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.web}"

    @property
    def text_to_image(self) -> bool:
        return self.clip_text_model is not None and self.clip_image_model is not None

    def save(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / PLAN_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, var_dir: Path) -> StackPlan:
        path = var_dir / "local" / PLAN_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: start the stack with `mmsearch local up` first")
        return cls.model_validate_json(path.read_text(encoding="utf-8"))


class ReadyReport(BaseModel):
    """Written to var/local/ready.json once every process answers its readiness check."""

    model_config = ConfigDict(frozen=True)

    search_url: str
    web_url: str
    tokenizer_target: str
    model_server_target: str
    milvus_uri: str
    mongo_uri: str
    text_to_image: bool
    loaded: dict[str, int]  # corpus -> documents
