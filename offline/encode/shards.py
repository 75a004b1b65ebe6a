"""Shard files: written whole or not at all; read back with their shapes checked against the manifest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from mmsearch.files import atomic_binary_writer, write_text_atomic
from offline.encode.manifest import IndexManifest, ManifestError, ShardInfo, read_manifest

Vectors = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]


def shard_names(index: int) -> tuple[str, str]:
    return f"shard-{index:05d}.vectors.npy", f"shard-{index:05d}.ids.npy"


def _save_atomic(path: Path, array: npt.NDArray[np.generic]) -> None:
    with atomic_binary_writer(path) as f:
        np.save(f, array, allow_pickle=False)


def write_shard(folder: Path, index: int, first_row: int, ids: Ids, vectors: Vectors) -> ShardInfo:
    vec_name, ids_name = shard_names(index)
    _save_atomic(folder / ids_name, ids.astype(np.int64, copy=False))
    _save_atomic(folder / vec_name, vectors.astype(np.float32, copy=False))
    return ShardInfo(index=index, vectors=vec_name, ids=ids_name, count=len(ids), first_row=first_row)


def write_done_marker(folder: Path, shard: ShardInfo, job_key: str) -> None:
    """Written by a distributed worker after its shard files: the shard is whole even if the driver that
    would have recorded it in vectors.json was killed. `job_key` ties it to one job."""
    body = json.dumps({"job": job_key, "shard": shard.model_dump()})
    write_text_atomic(folder / marker_name(shard.index), body + "\n")


def marker_name(index: int) -> str:
    return f"shard-{index:05d}.done.json"


def read_done_markers(folder: Path, job_key: str) -> dict[int, ShardInfo]:
    """Shards of this job that workers finished; markers of another job or unreadable ones are ignored."""
    found: dict[int, ShardInfo] = {}
    for path in sorted(folder.glob("shard-*.done.json")):
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            shard = ShardInfo.model_validate(body["shard"])
        except (OSError, ValueError, KeyError, TypeError, ValidationError):
            continue
        if body.get("job") == job_key and path.name == marker_name(shard.index):
            found[shard.index] = shard
    return found


def shard_ok(folder: Path, shard: ShardInfo, dim: int) -> bool:
    """Whether a shard listed in the manifest is whole on disk (files present, shapes as recorded)."""
    try:
        vec = np.load(folder / shard.vectors, mmap_mode="r", allow_pickle=False)
        ids = np.load(folder / shard.ids, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return bool(vec.shape == (shard.count, dim) and ids.shape == (shard.count,))


def read_shard(folder: Path, shard: ShardInfo, dim: int) -> tuple[Ids, Vectors]:
    if not shard_ok(folder, shard, dim):
        raise ManifestError(f"{folder}: shard {shard.index} is missing or damaged; re-run `mmsearch index`")
    ids: Ids = np.load(folder / shard.ids, allow_pickle=False)
    vec: Vectors = np.load(folder / shard.vectors, allow_pickle=False)
    return ids, vec


def open_vectors(folder: Path) -> IndexManifest:
    """The manifest of a complete vectors folder, or an error that says how to complete it."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise ManifestError(f"{folder} holds no vectors (no vectors.json); run `mmsearch index --output {folder}`")
    if not manifest.complete:
        raise ManifestError(
            f"vectors in {folder} are incomplete ({len(manifest.shards)} of {manifest.shard_count} shards): "
            "re-run the same `mmsearch index` command to finish them"
        )
    return manifest


def iter_shards(folder: Path, manifest: IndexManifest) -> Iterator[tuple[Ids, Vectors]]:
    for shard in manifest.shards:
        yield read_shard(folder, shard, manifest.dim)
