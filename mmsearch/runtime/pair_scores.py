"""A cross-encoder's logits to one relevance score per (query, document) pair, as its manifest says."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mmsearch.model_repo import ModelManifest, ModelRepoError


def pair_scores(logits: npt.NDArray[np.float32], manifest: ModelManifest) -> npt.NDArray[np.float32]:
    """`logits` [pairs, labels] -> [pairs]: the score label's logit as is ("none"), its logistic ("sigmoid") or its
    probability over all labels ("softmax")."""
    if manifest.activation is None or manifest.score_label is None:
        raise ModelRepoError(f"model {manifest.key!r} ({manifest.kind}) is not a cross-encoder: it has no score rule")
    x = np.asarray(logits, dtype=np.float64)
    label = manifest.score_label
    if manifest.activation == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        out = (e / e.sum(axis=1, keepdims=True))[:, label]
    elif manifest.activation == "sigmoid":
        out = 1.0 / (1.0 + np.exp(-x[:, label]))
    else:
        out = x[:, label]
    return np.asarray(out, dtype=np.float32)
