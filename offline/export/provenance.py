"""Export settings recorded in every manifest, so an export can be reproduced and compared."""

from __future__ import annotations

from typing import Any

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
