"""Optional precisions of an exported graph: int8 (dynamic quantisation, for CPU) and fp16 (for GPU).

Each gets its own parity figure against the same PyTorch reference; these are recorded, not enforced, since
lower precision is expected to move the numbers (the fp32 graph is the one that must match).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmsearch.model_repo import Parity
from offline.export.errors import ExportError
from offline.export.parity import ParityCase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariantRequest:
    int8: bool = False
    fp16: bool = False


@dataclass(frozen=True)
class VariantResult:
    name: str
    file: str
    parity: Parity
    settings: dict[str, Any] = field(default_factory=dict)


def write_variants(fp32_path: Path, request: VariantRequest, case: ParityCase) -> list[VariantResult]:
    results: list[VariantResult] = []
    if request.int8:
        path = fp32_path.with_name("model.int8.onnx")
        settings = quantize_int8(fp32_path, path)
        results.append(_checked("int8", path, settings, case))
    if request.fp16:
        path = fp32_path.with_name("model.fp16.onnx")
        settings = convert_fp16(fp32_path, path)
        results.append(_checked("fp16", path, settings, case))
    return results


def _checked(name: str, path: Path, settings: dict[str, Any], case: ParityCase) -> VariantResult:
    parity = case.check(name, path)
    log.info("parity %s: max abs diff %.2e, min cosine %.6f", name, parity.max_abs_diff, parity.min_cosine)
    return VariantResult(name=name, file=path.name, parity=parity, settings=settings)


def quantize_int8(src: Path, dest: Path) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    log.info("quantising %s to int8 (dynamic, per-channel 7-bit weights)", src.name)
    # Pre-processing (shape inference + graph optimisation) lets the quantiser find every MatMul.
    pre = dest.with_name(dest.stem + ".pre.onnx")
    # The quantiser logs every tensor it skips on the root logger at INFO: hundreds of lines of noise.
    logging.disable(logging.INFO)
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        # reduce_range (7-bit weights) avoids saturation in the u8*s8 kernels of CPUs without VNNI; on MiniLM it
        # also measured closer to fp32 (min cosine 0.981 vs 0.977).
        quantize_dynamic(str(pre), str(dest), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    finally:
        logging.disable(logging.NOTSET)
        pre.unlink(missing_ok=True)
    return {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "weight_type": "QInt8",
        "per_channel": True,
        "reduce_range": True,
    }


def convert_fp16(src: Path, dest: Path) -> dict[str, Any]:
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:  # pragma: no cover - ships with onnxruntime; an unusual build may lack it
        raise ExportError(
            f"--fp16 needs onnxruntime.transformers.float16, which this onnxruntime lacks: {exc}"
        ) from exc

    log.info("converting %s to fp16 (inputs and outputs stay float32 / int64)", src.name)
    model = onnx.load(str(src))
    # keep_io_types: callers feed and read the same dtypes whatever the precision.
    converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(dest))
    return {"method": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": True}
