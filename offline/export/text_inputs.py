"""Text inputs for export and parity, made by the same runtime preprocessor the online side uses."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mmsearch.model_repo import ModelManifest

if TYPE_CHECKING:
    from mmsearch.runtime.text import Role


def normalizer_lowercases(spec: Any) -> bool:
    if not isinstance(spec, dict):
        return False
    if spec.get("type") == "Lowercase" or (spec.get("type") == "BertNormalizer" and spec.get("lowercase")):
        return True
    return any(normalizer_lowercases(s) for s in spec.get("normalizers", []) or [])


def tokenize(
    tokenizer_file: Path,
    manifest: ModelManifest,
    texts: list[str],
    role: Role | None = None,
) -> dict[str, npt.NDArray[np.int64]]:
    from tokenizers import Tokenizer

    from mmsearch.runtime.text import TextPreprocessor

    return TextPreprocessor(Tokenizer.from_file(str(tokenizer_file)), manifest).prep(texts, role=role).tensors
