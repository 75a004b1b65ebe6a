"""The exposure document of one answered search (schema.py describes the collection)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any


def exposure_document(
    *,
    request_id: str,
    user_id: str,
    scene: str,
    experiments: Mapping[str, str],
    pinned_layers: Sequence[str],
    item_ids: Sequence[str],
    offset: int,
    config_digest: str,
    key_id: str | None = None,
) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "userId": user_id,
        "scene": scene,
        "experiments": [{"layer": layer, "experiment": exp} for layer, exp in experiments.items()],
        # A pinned layer was chosen by the caller (useDebug), not by the random split: the report leaves it out.
        "pinnedLayers": list(pinned_layers),
        "pinned": bool(pinned_layers),
        "items": [{"id": item_id, "position": offset + i + 1} for i, item_id in enumerate(item_ids)],
        "offset": offset,
        "configDigest": config_digest,
        # The API key the search was made with (its id; None: no key), so traffic can be told apart per client.
        "keyId": key_id,
        "time": dt.datetime.now(dt.UTC),
    }
