"""Checking a Predict request against the model's declared signature, before anything reaches ONNX Runtime.

Every problem is reported with the tensor's name and what was expected, so a client can fix its request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsearch.model_repo import ModelManifest, TensorSpec


class SignatureError(ValueError):
    pass


def check_inputs(manifest: ModelManifest, inputs: Mapping[str, npt.NDArray[Any]]) -> int:
    """Validate names, dtypes, ranks, fixed and shared dimensions; returns the batch size."""
    expected = manifest.input_names
    missing = [n for n in expected if n not in inputs]
    extra = sorted(n for n in inputs if n not in expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if extra:
            parts.append(f"unknown input(s) {extra}")
        raise SignatureError(f"model {manifest.key!r}: {'; '.join(parts)}; it takes exactly {expected}")
    # A symbolic dimension ("batch", "sequence") must have one value across all inputs.
    seen: dict[str, tuple[int, str]] = {}
    for spec in manifest.inputs:
        array = inputs[spec.name]
        _check_one(manifest.key, spec, array)
        for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if isinstance(want, str):
                if want in seen and seen[want][0] != got:
                    other_value, other = seen[want]
                    raise SignatureError(
                        f"input {spec.name!r}: dimension {axis} ({want}) is {got} but input {other!r} has "
                        f"{other_value}; they must match"
                    )
                seen.setdefault(want, (int(got), spec.name))
    first = manifest.inputs[0]
    return int(inputs[first.name].shape[0])


def _check_one(key: str, spec: TensorSpec, array: npt.NDArray[Any]) -> None:
    if array.dtype != np.dtype(spec.dtype):
        raise SignatureError(f"input {spec.name!r}: dtype {array.dtype.name}, model {key!r} needs {spec.dtype}")
    if array.ndim != len(spec.shape):
        raise SignatureError(
            f"input {spec.name!r}: rank {array.ndim} (shape {list(array.shape)}), model {key!r} needs rank "
            f"{len(spec.shape)} ({_shape_text(spec)})"
        )
    if array.shape[0] == 0:
        raise SignatureError(f"input {spec.name!r}: empty batch (shape {list(array.shape)}); send at least one row")
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
        if isinstance(want, int) and want >= 0 and want != got:
            raise SignatureError(
                f"input {spec.name!r}: dimension {axis} is {got}, model {key!r} needs {want} ({_shape_text(spec)})"
            )
        if isinstance(want, str) and got == 0:
            raise SignatureError(f"input {spec.name!r}: dimension {axis} ({want}) is 0")


def check_outputs(manifest: ModelManifest, requested: list[str]) -> list[str]:
    """The output names to compute: the requested ones (validated) or all of them."""
    if not requested:
        return manifest.output_names
    unknown = [n for n in requested if n not in manifest.output_names]
    if unknown:
        raise SignatureError(f"model {manifest.key!r} has no output(s) {unknown}; it has {manifest.output_names}")
    return list(dict.fromkeys(requested))


def _shape_text(spec: TensorSpec) -> str:
    return "[" + ", ".join(str(d) for d in spec.shape) + "]"


def batch_axis_names(manifest: ModelManifest) -> set[str]:
    """Symbolic names of the batch axis (axis 0) of the inputs."""
    return {s.shape[0] for s in manifest.inputs if s.shape and isinstance(s.shape[0], str)}


def padded_axes(manifest: ModelManifest) -> dict[str, dict[int, str]]:
    """Per input, the non-batch dynamic axes that differ between requests (text length), padded when batching."""
    return {s.name: {i: d for i, d in enumerate(s.shape) if i > 0 and isinstance(d, str)} for s in manifest.inputs}


def output_dynamic_axes(manifest: ModelManifest) -> dict[str, dict[int, str]]:
    """Per output, its non-batch symbolic axes (e.g. token_embeddings' "sequence"), cropped back after batching."""
    return {s.name: {i: d for i, d in enumerate(s.shape) if i > 0 and isinstance(d, str)} for s in manifest.outputs}
