"""The one codec between numpy arrays and the `Tensor` protobuf message."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from mmsearch.api.v1 import tensor_pb2

# Only dtypes that models and tokenizers actually exchange; anything else is a client bug.
ALLOWED_DTYPES: frozenset[str] = frozenset({"float32", "float16", "int64", "int32", "bool", "uint8"})


class TensorDecodeError(ValueError):
    """A Tensor message that does not describe a valid array. The message names the tensor."""


def to_proto(array: npt.NDArray[np.generic]) -> tensor_pb2.Tensor:
    dtype = array.dtype.name
    if dtype not in ALLOWED_DTYPES:
        raise TensorDecodeError(f"dtype {dtype} is not supported; use one of {sorted(ALLOWED_DTYPES)}")
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return tensor_pb2.Tensor(dtype=dtype, shape=list(array.shape), data=np.ascontiguousarray(little).tobytes())


def from_proto(tensor: tensor_pb2.Tensor, name: str = "tensor") -> npt.NDArray[np.generic]:
    """Decode and validate; `name` is used in the error message so callers can say which input failed."""
    if tensor.dtype not in ALLOWED_DTYPES:
        raise TensorDecodeError(f"{name}: dtype {tensor.dtype!r} is not supported; use one of {sorted(ALLOWED_DTYPES)}")
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise TensorDecodeError(f"{name}: negative dimension in shape {list(shape)}")
    dtype = np.dtype(tensor.dtype).newbyteorder("<")
    # Python ints: np.prod in int64 wraps around (2**32 x 2**32 -> 0) and would let an absurd shape through.
    expected = math.prod(shape) * dtype.itemsize
    if len(tensor.data) != expected:
        raise TensorDecodeError(
            f"{name}: shape {list(shape)} of {tensor.dtype} needs {expected} bytes, got {len(tensor.data)}"
        )
    try:
        array = np.frombuffer(tensor.data, dtype=dtype).reshape(shape)
    except ValueError as exc:  # an empty tensor whose other dimensions exceed numpy's limits, e.g. [0, 2**62]
        raise TensorDecodeError(f"{name}: shape {list(shape)} cannot be represented: {exc}") from exc
    return array.astype(dtype.newbyteorder("="), copy=False)


def map_to_proto(arrays: Mapping[str, npt.NDArray[np.generic]]) -> dict[str, tensor_pb2.Tensor]:
    return {name: to_proto(a) for name, a in arrays.items()}


def map_from_proto(tensors: Mapping[str, tensor_pb2.Tensor]) -> dict[str, npt.NDArray[np.generic]]:
    return {name: from_proto(t, name) for name, t in tensors.items()}
