"""What a vectors folder holds: which model, field and input made it, and which shards are complete.

The manifest is rewritten atomically after each shard, so after an interruption it lists exactly the shards
that are whole on disk; a re-run continues from there.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmsearch.files import write_text_atomic
from offline.errors import OfflineError

MANIFEST_NAME = "vectors.json"
FORMAT_VERSION = 1


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ShardInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    vectors: str  # file name of the float32 [count, dim] array
    ids: str  # file name of the int64 [count] array
    count: int
    first_row: int  # position of its first row in the corpus


class IndexManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    model_key: str
    model_kind: str
    model_sha256: str  # of the ONNX file: a re-exported model under the same key is a different model
    dim: int
    field: str
    vector_field: str  # the Milvus field name: `<field>_emb`
    normalized: bool = True
    input_path: str
    input_sha256: str
    total: int  # rows in the corpus
    shard_size: int
    shards: list[ShardInfo] = Field(default_factory=list)
    complete: bool = False
    created_at: str = Field(default_factory=_now)
    updated_at: str = Field(default_factory=_now)

    @property
    def done_rows(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def shard_count(self) -> int:
        return -(-self.total // self.shard_size) if self.total else 0

    @property
    def job_key(self) -> str:
        """What makes two runs the same job: shards of another key in the folder are never reused."""
        spec = [self.model_key, self.model_sha256, self.field, self.input_sha256, self.total, self.shard_size]
        return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]

    def missing_shards(self) -> list[int]:
        done = {s.index for s in self.shards}
        return [i for i in range(self.shard_count) if i not in done]

    def add_shard(self, shard: ShardInfo) -> None:
        """Record a finished shard; shards may finish in any order (a distributed job), the list stays sorted."""
        self.shards = sorted([s for s in self.shards if s.index != shard.index] + [shard], key=lambda s: s.index)
        self.complete = len(self.shards) == self.shard_count


class ManifestError(OfflineError):
    pass


def vector_field_name(field: str) -> str:
    return f"{field}_emb"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder: Path) -> IndexManifest | None:
    file = folder / MANIFEST_NAME
    if not file.is_file():
        return None
    try:
        return IndexManifest.model_validate_json(file.read_bytes())
    except ValidationError as exc:
        raise ManifestError(f"{file} is not a vectors manifest ({exc.error_count()} errors); use --restart") from exc


def write_manifest(folder: Path, manifest: IndexManifest) -> None:
    manifest.updated_at = _now()
    write_text_atomic(folder / MANIFEST_NAME, manifest.model_dump_json(indent=2) + "\n")
