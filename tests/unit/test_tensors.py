import numpy as np
import pytest

from mmsearch.api.v1 import tensor_pb2
from mmsearch.tensors import TensorDecodeError, from_proto, map_from_proto, map_to_proto, to_proto


@pytest.mark.parametrize("dtype", ["float32", "float16", "int64", "int32", "bool", "uint8"])
def test_round_trip_keeps_dtype_shape_and_values(dtype: str) -> None:
    a = (np.arange(24).reshape(2, 3, 4) % 2).astype(dtype)
    b = from_proto(to_proto(a))
    assert b.dtype == a.dtype
    assert b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_big_endian_input_is_sent_little_endian() -> None:
    a = np.array([1.5, -2.0], dtype=">f4")
    t = to_proto(a)
    assert t.data == np.array([1.5, -2.0], dtype="<f4").tobytes()
    np.testing.assert_array_equal(from_proto(t), [1.5, -2.0])


def test_unsupported_dtype_is_refused_with_the_tensor_name() -> None:
    t = tensor_pb2.Tensor(dtype="complex64", shape=[1], data=b"\0" * 8)
    with pytest.raises(TensorDecodeError, match="input_ids: dtype 'complex64'"):
        from_proto(t, "input_ids")
    with pytest.raises(TensorDecodeError, match="float64"):
        to_proto(np.zeros(2, dtype=np.float64))


def test_byte_count_must_match_shape() -> None:
    t = tensor_pb2.Tensor(dtype="int64", shape=[2, 3], data=b"\0" * 40)
    with pytest.raises(TensorDecodeError, match=r"attention_mask: shape \[2, 3\] of int64 needs 48 bytes, got 40"):
        from_proto(t, "attention_mask")


def test_negative_dimension_is_refused() -> None:
    with pytest.raises(TensorDecodeError, match="negative"):
        from_proto(tensor_pb2.Tensor(dtype="int64", shape=[-1], data=b""))


def test_maps_round_trip() -> None:
    arrays: dict[str, np.ndarray] = {"a": np.ones((1, 2), np.float32), "b": np.zeros((3,), np.int64)}
    back = map_from_proto(map_to_proto(arrays))
    assert set(back) == {"a", "b"}
    np.testing.assert_array_equal(back["a"], arrays["a"])
