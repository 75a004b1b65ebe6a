"""Touch-ups of an exported graph's declared inputs and outputs."""

from __future__ import annotations

from pathlib import Path

from mmsearch.model_repo import TensorSpec


def declare_output_shapes(path: Path, specs: list[TensorSpec]) -> None:
    """Write the manifest's output shapes into the graph.

    The tracer names derived dimensions (`Divsentence_embedding_dim_1`) even where they are fixed by the
    weights; declaring them lets readers of the ONNX file (and ORT's shape checks) see the real size.
    """
    import onnx

    model = onnx.load(str(path))
    by_name = {s.name: s for s in specs}
    for value in model.graph.output:
        spec = by_name.get(value.name)
        if spec is None:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(spec.shape):
            raise ValueError(f"{path.name}: output {value.name} has rank {len(dims)}, manifest says {spec.shape}")
        for dim, want in zip(dims, spec.shape, strict=True):
            if isinstance(want, int):
                dim.dim_value = want
            else:
                dim.dim_param = want
    onnx.save(model, str(path))
