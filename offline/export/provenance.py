"""How every graph is exported (one exporter call), and the export settings recorded in every manifest, so an
export can be reproduced and compared."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OPSET = 17


def export_record(**extra: Any) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    record: dict[str, Any] = {
        "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
        "opset": OPSET,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    record.update(extra)
    return record


def export_onnx(
    module: Any,
    args: tuple[Any, ...],
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    """Trace `module` on `args` into `path` with the exporter `export_record` describes."""
    import torch

    log.info("exporting ONNX graph (opset %d) to %s", OPSET, path.name)
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about Python control flow it freezes; the parity check on other shapes is the
        # real test of that, so these warnings would only be noise (and errors under pytest).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        # The TorchScript exporter is deprecated but still the one that exports these models exactly.
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
