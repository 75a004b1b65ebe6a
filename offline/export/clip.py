"""Placeholder until the CLIP exporter lands (next commit)."""

from __future__ import annotations

from typing import Any

from mmsearch.model_repo import ModelManifest, ModelRepository
from offline.export.errors import ExportError


def export_clip(source: str, repo: ModelRepository, key: str, **_: Any) -> list[ModelManifest]:
    raise ExportError("mmsearch export clip is not implemented yet")
