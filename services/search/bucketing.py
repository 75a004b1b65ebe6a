"""Which experiment of a layer serves a user.

sha256(userId + "#" + salt) picks one of BUCKETS (10 000) buckets, sticky per user; experiments own contiguous
bucket ranges in proportion to their ratios. Each layer has its own salt (default: its name), so assignments in
different layers are independent (the reference used one salt for all layers, correlating them).
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Mapping

from services.search.config.model import BUCKETS, Experiment, Layer, Scene
from services.search.errors import InvalidQueryError


def bucket_of(user_id: str, salt: str) -> int:
    digest = hashlib.sha256(f"{user_id}#{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def pick(layer: Layer, user_id: str, rng: random.Random | None = None) -> tuple[Experiment, int]:
    """The layer's experiment for this user and the bucket that chose it."""
    random_layer = layer.bucketizer == "random"
    bucket = (rng or random).randrange(BUCKETS) if random_layer else bucket_of(user_id, layer.salt)
    return layer.experiments[bisect.bisect_right(layer.bounds, bucket)], bucket


def assign(
    scene: Scene,
    user_id: str,
    *,
    pinned: Mapping[str, str] | None = None,
) -> dict[str, Experiment]:
    """Experiments for every layer of the scene; `pinned` ({layer: experiment}, debug only) overrides buckets."""
    pinned = pinned or {}
    for layer_name, exp_name in pinned.items():
        layer = scene.layer(layer_name)
        if layer is None:
            have = ", ".join(la.name for la in scene.layers)
            raise InvalidQueryError(
                f"specifiedLayerAndExperiment: scene {scene.name!r} has no layer {layer_name!r} ({have})"
            )
        if layer.experiment(exp_name) is None:
            have = ", ".join(e.name for e in layer.experiments)
            raise InvalidQueryError(
                f"specifiedLayerAndExperiment: layer {layer_name!r} has no experiment {exp_name!r} ({have})"
            )
    out: dict[str, Experiment] = {}
    for layer in scene.layers:
        if layer.name in pinned:
            exp = layer.experiment(pinned[layer.name])
            assert exp is not None  # checked above
            out[layer.name] = exp
        else:
            out[layer.name] = pick(layer, user_id)[0]
    return out
