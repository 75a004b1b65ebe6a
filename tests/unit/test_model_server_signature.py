"""Predict inputs checked against a manifest signature: each mistake is named precisely."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from mmsearch.model_repo import ModelManifest, ModelSource, TensorSpec
from services.model_server.signature import (
    SignatureError,
    check_inputs,
    check_outputs,
    output_dynamic_axes,
    padded_axes,
)

TEXT = ModelManifest(
    key="text",
    kind="text_embedding",
    inputs=[
        TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"]),
        TensorSpec(name="attention_mask", dtype="int64", shape=["batch", "sequence"]),
    ],
    outputs=[
        TensorSpec(name="sentence_embedding", dtype="float32", shape=["batch", 8]),
        TensorSpec(name="token_embeddings", dtype="float32", shape=["batch", "sequence", 8]),
    ],
    embedding_dim=8,
    normalized=True,
    source=ModelSource(note="test"),
)
IMAGE = TEXT.model_copy(
    update={
        "key": "image",
        "kind": "clip_image",
        "inputs": [TensorSpec(name="pixel_values", dtype="float32", shape=["batch", 3, 4, 4])],
    }
)


def ids(rows: int = 2, length: int = 5, dtype: Any = np.int64) -> npt.NDArray[Any]:
    return np.ones((rows, length), dtype=dtype)


def test_valid_inputs_give_the_batch_size() -> None:
    assert check_inputs(TEXT, {"input_ids": ids(3), "attention_mask": ids(3)}) == 3
    assert check_inputs(IMAGE, {"pixel_values": np.zeros((2, 3, 4, 4), np.float32)}) == 2


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"input_ids": ids()}, "missing input(s) ['attention_mask']"),
        ({"input_ids": ids(), "attention_mask": ids(), "x": ids()}, "unknown input(s) ['x']"),
        ({"input_ids": ids(dtype=np.int32), "attention_mask": ids()}, "input 'input_ids': dtype int32"),
        ({"input_ids": ids(), "attention_mask": np.ones(5, np.int64)}, "input 'attention_mask': rank 1"),
        ({"input_ids": ids(0), "attention_mask": ids(0)}, "input 'input_ids': empty batch"),
        ({"input_ids": ids(2), "attention_mask": ids(3)}, "input 'attention_mask': dimension 0 (batch) is 3"),
        ({"input_ids": ids(2, 5), "attention_mask": ids(2, 6)}, "dimension 1 (sequence) is 6"),
        ({"input_ids": ids(2, 0), "attention_mask": ids(2, 0)}, "dimension 1 (sequence) is 0"),
    ],
)
def test_each_mistake_is_named(inputs: dict[str, npt.NDArray[Any]], message: str) -> None:
    with pytest.raises(SignatureError) as info:
        check_inputs(TEXT, inputs)
    assert message in str(info.value)


def test_fixed_dimensions_are_checked() -> None:
    with pytest.raises(SignatureError, match=r"dimension 2 is 5, model 'image' needs 4"):
        check_inputs(IMAGE, {"pixel_values": np.zeros((1, 3, 5, 4), np.float32)})


def test_outputs_default_to_all_and_unknown_ones_are_named() -> None:
    assert check_outputs(TEXT, []) == ["sentence_embedding", "token_embeddings"]
    assert check_outputs(TEXT, ["sentence_embedding", "sentence_embedding"]) == ["sentence_embedding"]
    with pytest.raises(SignatureError, match=r"no output\(s\) \['pooled'\]"):
        check_outputs(TEXT, ["pooled"])


def test_batching_plan_from_the_signature() -> None:
    assert padded_axes(TEXT) == {"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}
    assert padded_axes(IMAGE) == {"pixel_values": {}}
    assert output_dynamic_axes(TEXT) == {"sentence_embedding": {}, "token_embeddings": {1: "sequence"}}
