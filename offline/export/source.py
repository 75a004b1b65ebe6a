"""Where a model comes from: a local folder, or a Hugging Face hub id fetched into the local cache.

Either way the exporters read a folder, so a hub model and a copied folder take the same code path.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from mmsearch.model_repo import ModelSource
from offline.export.errors import ExportError

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ResolvedSource:
    folder: Path
    record: ModelSource


def looks_like_path(source: str) -> bool:
    """A hub id is `name` or `org/name`; anything with a path-ish start, or more than one '/', is a folder."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def resolve_source(source: str, *, revision: str | None = None) -> ResolvedSource:
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ExportError(f"--source {source!r} is a file; pass the model's folder")
        folder = path.resolve()
        return ResolvedSource(folder, ModelSource(folder=str(folder), weights_sha256=weights_sha256(folder)))
    if looks_like_path(source):
        raise ExportError(f"model folder {source!r} does not exist; check the path")
    folder = _download(source, revision)
    return ResolvedSource(
        folder,
        ModelSource(hub_id=source, revision=folder.name, folder=str(folder), weights_sha256=weights_sha256(folder)),
    )


def _download(hub_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    log.info("downloading %s from the Hugging Face hub (revision %s)", hub_id, revision or "main")
    try:
        return Path(snapshot_download(hub_id, revision=revision))
    except (HFValidationError, GatedRepoError, RepositoryNotFoundError) as exc:
        raise ExportError(f"--source: {hub_refusal(hub_id, exc)}") from exc
    except RevisionNotFoundError as exc:
        raise ExportError(f"hub model {hub_id!r} has no revision {revision!r}") from exc
    except LocalEntryNotFoundError as exc:
        # Raised when the hub cannot be reached and nothing is cached: the offline case.
        raise ExportError(
            f"cannot download {hub_id!r}: the Hugging Face hub is unreachable from here (no network, or "
            f"HF_HUB_OFFLINE is set) and the model is not in the local cache. Download it on a machine with "
            f"network (e.g. `huggingface-cli download {hub_id} --local-dir DIR`) and pass --source DIR"
        ) from exc
    except OSError as exc:  # connection errors that slipped past huggingface_hub's own wrapping
        raise ExportError(
            f"cannot download {hub_id!r} from the Hugging Face hub ({exc}); pass a local folder with --source DIR"
        ) from exc


def hub_refusal(hub_id: str, exc: Exception) -> str:
    """What to tell a person whose hub id the hub refused: not a valid id, gated, or unknown (or private)."""
    from huggingface_hub.errors import GatedRepoError, HFValidationError

    if isinstance(exc, HFValidationError):
        return f"{hub_id!r} is neither an existing folder nor a valid hub id: {exc}"
    if isinstance(exc, GatedRepoError):
        return f"hub model {hub_id!r} is gated: log in (HF_TOKEN) with access, or pass a local folder"
    return f"hub model {hub_id!r} not found (unknown id, or private): check the id, or pass a local folder"


def weights_sha256(folder: Path) -> str | None:
    """sha256 of the weights file; for several (sharded or per-module) files, of their `name sha` lines."""
    files = sorted(p for name in WEIGHT_FILES for p in folder.rglob(name) if p.is_file())
    files += sorted(folder.rglob("model-*-of-*.safetensors"))
    if not files:
        return None
    digests = [(p.relative_to(folder).as_posix(), file_sha256(p)) for p in files]
    if len(digests) == 1:
        return digests[0][1]
    lines = "".join(f"{name} {digest}\n" for name, digest in digests)
    return hashlib.sha256(lines.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def require_files(folder: Path, what: str, groups: list[tuple[str, ...]]) -> None:
    """Each group is satisfied by any one of its files; name the first group that is not."""
    for group in groups:
        if not any((folder / name).is_file() for name in group):
            names = " or ".join(group)
            raise ExportError(f"{folder} is not a {what} folder: {names} is missing")
