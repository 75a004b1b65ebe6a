"""Where the local stack's CLIP model comes from: a local folder, the Hugging Face hub, the local Hugging Face
cache, or nowhere (text-to-image off, with one line saying why).

The default source is a hub id, so on a machine that reaches the hub the first start exports both towers. Where
the hub cannot be reached (an air-gapped host, CI) the start must not sit in network time-outs and retries:
one probe with a short time-out decides, HF_HUB_OFFLINE is honoured without any probe, and a model already in
the Hugging Face cache is exported from there (with HF_HUB_OFFLINE=1 for the export, so it never waits on the
network either).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from offline.export.source import hub_refusal

log = logging.getLogger(__name__)


class ClipSourceError(Exception):
    """The source names something that cannot be used anywhere (an unknown or gated hub id)."""


@dataclass(frozen=True)
class ClipChoice:
    source: str | None  # what `mmsearch export clip --source` gets; None: text-to-image stays off
    reason: str  # one line: where the model comes from, or why text-to-image is off
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the export


def choose(source: str, *, probe_seconds: float) -> ClipChoice:
    """Decide how to get `source`: a folder, or a hub id (from the hub, or from the cache)."""
    folder = Path(source).expanduser()
    if folder.exists():
        return ClipChoice(str(folder), f"CLIP from the local folder {folder}")

    from huggingface_hub import constants

    cached = _cached_snapshot(source)
    offline_env = {"HF_HUB_OFFLINE": "1"}
    if constants.HF_HUB_OFFLINE:
        if cached is not None:
            return ClipChoice(source, f"CLIP {source} from the Hugging Face cache (HF_HUB_OFFLINE is set)", offline_env)
        return ClipChoice(
            None, f"HF_HUB_OFFLINE is set and {source} is not in the Hugging Face cache ({constants.HF_HUB_CACHE})"
        )
    problem = _probe(source, probe_seconds)
    if problem is None:
        return ClipChoice(source, f"CLIP {source} from the Hugging Face hub ({constants.ENDPOINT})")
    if cached is not None:
        return ClipChoice(source, f"CLIP {source} from the Hugging Face cache (the hub: {problem})", offline_env)
    return ClipChoice(None, f"the Hugging Face hub cannot be reached ({problem}) and {source} is not cached")


def _cached_snapshot(hub_id: str) -> Path | None:
    """The cached snapshot of `hub_id` (no network), or None when it is not in the cache or not a hub id."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(hub_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        return None


def _probe(hub_id: str, seconds: float) -> str | None:
    """None when the hub answers for `hub_id` within `seconds`, else what went wrong, in a few words."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    try:
        HfApi().model_info(hub_id, timeout=seconds)
    except (HFValidationError, GatedRepoError, RepositoryNotFoundError) as exc:
        raise ClipSourceError(f"--clip-source: {hub_refusal(hub_id, exc)} (or pass --no-clip)") from exc
    except Exception as exc:
        log.debug("Hugging Face hub probe failed", exc_info=True)
        return f"{type(exc).__name__}: {exc}".split("\n")[0][:200]
    return None
