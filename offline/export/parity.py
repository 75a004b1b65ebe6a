"""ONNX Runtime against PyTorch on fixed inputs: the figures every manifest records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from mmsearch.model_repo import Parity
from offline.export.errors import ExportError

# An fp32 export that reproduces PyTorch less closely than this is broken, not merely imprecise.
FP32_MIN_COSINE = 0.99999

# Mixed lengths in one padded batch, English and Chinese, so padding and CJK tokenisation are both exercised.
PARITY_TEXTS = [
    "hello",
    "How do I apply for a building permit in the city centre?",
    "A photo of a cat sitting on a red sofa next to a window, in the afternoon sun.",
    "你好",
    "如何申请建筑许可证？",
    "一只猫坐在窗边的红色沙发上，午后的阳光洒在它身上。",
    "Mixed 中英文 text with numbers 12345 and punctuation!?",
    "Search engines turn queries into vectors; the nearest vectors in the index are the answers. " * 3,
]


@dataclass(frozen=True)
class ParityCase:
    """Fixed inputs, the PyTorch output on them (computed before export) and what to call them."""

    inputs: Mapping[str, npt.NDArray[Any]]
    reference: npt.NDArray[np.float32]
    output: str
    description: str

    def check(self, variant: str, path: Path) -> Parity:
        return compare(variant, self.reference, run_onnx(path, self.inputs, self.output), self.description)


def ort_session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, inputs: Mapping[str, npt.NDArray[Any]], output: str) -> npt.NDArray[np.float32]:
    session = ort_session(path)
    feed = {i.name: inputs[i.name] for i in session.get_inputs()}
    (out,) = session.run([output], feed)
    return np.asarray(out, dtype=np.float32)


def compare(
    variant: str, reference: npt.NDArray[np.float32], candidate: npt.NDArray[np.float32], inputs: str
) -> Parity:
    if reference.shape != candidate.shape:
        raise ExportError(f"{variant} ONNX output has shape {candidate.shape}, PyTorch {reference.shape}")
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    cos = np.sum(ref * cand, axis=1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1), 1e-12)
    return Parity(
        variant=variant,
        max_abs_diff=float(np.max(np.abs(ref - cand))),
        min_cosine=float(np.min(cos)),
        n_inputs=int(reference.shape[0]),
        inputs=inputs,
    )


def enforce_fp32(parity: Parity, key: str) -> None:
    if not parity.min_cosine >= FP32_MIN_COSINE:  # also catches NaN
        raise ExportError(
            f"export of {key!r} failed its parity check: ONNX Runtime vs PyTorch min cosine "
            f"{parity.min_cosine:.7f} < {FP32_MIN_COSINE} (max abs diff {parity.max_abs_diff:.2e}) on "
            f"{parity.inputs}. The graph does not reproduce the model (unsupported op or tracing problem); "
            f"nothing was published"
        )
