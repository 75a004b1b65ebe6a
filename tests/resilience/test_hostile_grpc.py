"""Malformed and oversized gRPC messages to both gRPC services (the local stack's tokenizer and model server):
each gets a precise status (never UNKNOWN, never INTERNAL for a request the client got wrong), the server does not
crash (same PID, health SERVING afterwards) and answers a good request right after."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from mmsearch.api.v1 import model_server_pb2, model_server_pb2_grpc, tensor_pb2, tokenizer_pb2, tokenizer_pb2_grpc
from mmsearch.tensors import TensorDecodeError, from_proto
from stack import probes
from tests.fixtures.stack import LocalStack, child_pids
from tests.resilience.report import record

pytestmark = pytest.mark.resilience

C = grpc.StatusCode
TIMEOUT = 30.0
MB = 2**20
TEXT_MODEL = "minilm"
_outcomes: dict[str, str] = {}


@pytest.fixture(scope="module")
def channels(local_stack: LocalStack) -> Iterator[dict[str, grpc.Channel]]:
    opts = [("grpc.max_send_message_length", 256 * MB), ("grpc.max_receive_message_length", 256 * MB)]
    tok = grpc.insecure_channel(local_stack.ready.tokenizer_target, options=opts)
    mod = grpc.insecure_channel(local_stack.ready.model_server_target, options=opts)
    yield {"tokenizer": tok, "model": mod}
    tok.close()
    mod.close()
    record("hostile.grpc", {"cases": len(_outcomes), "outcomes": dict(sorted(_outcomes.items()))})


def _raw(channel: grpc.Channel, method: str, payload: bytes) -> tuple[grpc.StatusCode, str]:
    call = channel.unary_unary(method, None, None)  # no serializer: the bytes go on the wire as they are
    try:
        call(payload, timeout=TIMEOUT)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return C.OK, ""


def _code(make: Any) -> tuple[grpc.StatusCode, str]:
    try:
        make()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return C.OK, ""


def _ids(shape: list[int], data: bytes = b"", dtype: str = "int64") -> tensor_pb2.Tensor:
    return tensor_pb2.Tensor(dtype=dtype, shape=shape, data=data)


def _good_inputs(n: int = 3) -> dict[str, tensor_pb2.Tensor]:
    ids = np.array([[101, 2054, 102][:n]], dtype="<i8")
    return {
        "input_ids": _ids(list(ids.shape), ids.tobytes()),
        "attention_mask": _ids(list(ids.shape), np.ones_like(ids).tobytes()),
        "token_type_ids": _ids(list(ids.shape), np.zeros_like(ids).tobytes()),
    }


# Not protobuf at all, a truncated varint, a field with the wrong wire type, a length prefix beyond the end.
UNDECODABLE = [b"\xff\xff\xff\xff\xff", b"\x12\xff\xff\xff\xff\x0f", b"\x0a\x05ab", b"\x0d\x00\x00\x00"]


@pytest.mark.parametrize("payload", UNDECODABLE, ids=["garbage", "huge-length", "short-string", "wrong-wire-type"])
@pytest.mark.parametrize(
    ("service", "method"),
    [
        ("tokenizer", "/mmsearch.api.v1.Tokenizer/Tokenize"),
        ("tokenizer", "/mmsearch.api.v1.Tokenizer/PreprocessImages"),
        ("model", "/mmsearch.api.v1.ModelServer/Predict"),
        ("model", "/mmsearch.api.v1.ModelServer/LoadModel"),
    ],
)
def test_undecodable_messages_are_refused_without_a_crash(
    local_stack: LocalStack, channels: dict[str, grpc.Channel], service: str, method: str, payload: bytes
) -> None:
    code, details = _raw(channels[service], method, payload)
    _outcomes[f"{method.rsplit('/', 1)[1]} {payload[:6]!r}"] = code.name
    # grpc.aio itself answers a request it cannot parse, before any handler runs: UNKNOWN with the DecodeError in
    # the details. Bytes that happen to parse as an odd but valid message must be refused by the handler.
    if code == C.UNKNOWN:
        assert "DecodeError" in details, f"{method} with {payload!r}: UNKNOWN that is not a decode error: {details}"
    else:
        assert code in {C.INVALID_ARGUMENT, C.NOT_FOUND}, f"{method} with {payload!r}: {code} {details}"
    target = {"tokenizer": local_stack.ready.tokenizer_target, "model": local_stack.ready.model_server_target}
    assert probes.grpc_serving(target[service]), f"the {service} server is not SERVING after {payload!r}"


def _tokenizer_cases(stub: tokenizer_pb2_grpc.TokenizerStub) -> dict[str, tuple[set[grpc.StatusCode], Any]]:
    def tokenize(texts: list[str], model: str = TEXT_MODEL) -> Any:
        return lambda: stub.Tokenize(tokenizer_pb2.TokenizeRequest(model_name=model, texts=texts), timeout=TIMEOUT)

    def images(data: list[bytes], model: str = "clip-image") -> Any:
        request = tokenizer_pb2.PreprocessImagesRequest(model_name=model, images=data)
        return lambda: stub.PreprocessImages(request, timeout=TIMEOUT)

    return {
        "oversized message (40 MB of text)": ({C.RESOURCE_EXHAUSTED}, tokenize(["a" * 40 * MB])),
        "one 4 MB text": ({C.OK, C.INVALID_ARGUMENT}, tokenize(["word " * (4 * MB // 5)])),
        "10k empty texts": ({C.INVALID_ARGUMENT}, tokenize([""] * 10_000)),
        "model name with path traversal": ({C.NOT_FOUND, C.INVALID_ARGUMENT}, tokenize(["x"], "../../etc/passwd")),
        "model name of 1 MB": ({C.NOT_FOUND, C.INVALID_ARGUMENT}, tokenize(["x"], "m" * MB)),
        "image bytes that are text": ({C.INVALID_ARGUMENT, C.NOT_FOUND}, images([b"<svg/>"])),
        "no images": ({C.INVALID_ARGUMENT, C.NOT_FOUND}, images([])),
    }


def _model_cases(stub: model_server_pb2_grpc.ModelServerStub) -> dict[str, tuple[set[grpc.StatusCode], Any]]:
    def predict(inputs: dict[str, tensor_pb2.Tensor], **kw: Any) -> Any:
        return lambda: stub.Predict(
            model_server_pb2.PredictRequest(model_name=kw.get("model", TEXT_MODEL), inputs=inputs), timeout=TIMEOUT
        )

    good = _good_inputs()
    return {
        "oversized message (80 MB tensor)": (
            {C.RESOURCE_EXHAUSTED},
            predict({**good, "input_ids": _ids([1, 10 * MB], b"\x00" * 80 * MB)}),
        ),
        "shape whose element count overflows int64": (
            {C.INVALID_ARGUMENT},
            predict({**good, "input_ids": _ids([2**32, 2**32])}),
        ),
        "zero-size shape with a huge dimension": (
            {C.INVALID_ARGUMENT},
            predict({**good, "input_ids": _ids([0, 2**62])}),
        ),
        "negative dimension": ({C.INVALID_ARGUMENT}, predict({**good, "input_ids": _ids([-1, 3])})),
        "data shorter than the shape": ({C.INVALID_ARGUMENT}, predict({**good, "input_ids": _ids([1, 3], b"\x01")})),
        "dtype not allowed": ({C.INVALID_ARGUMENT}, predict({**good, "input_ids": _ids([1, 3], b"x" * 24, "object")})),
        "float ids": (
            {C.INVALID_ARGUMENT},
            predict({**good, "input_ids": _ids([1, 3], np.ones((1, 3), "<f8").tobytes(), "float64")}),
        ),
        "token id beyond the vocabulary": (
            {C.INVALID_ARGUMENT},
            predict({**good, "input_ids": _ids([1, 3], np.array([[101, 10**9, 102]], "<i8").tobytes())}),
        ),
        "missing input": ({C.INVALID_ARGUMENT}, predict({"input_ids": good["input_ids"]})),
        "unknown model": ({C.NOT_FOUND}, predict(good, model="no-such-model")),
        "model name of 1 MB": ({C.NOT_FOUND, C.INVALID_ARGUMENT}, predict(good, model="m" * MB)),
    }


def _assert_cases(
    cases: dict[str, tuple[set[grpc.StatusCode], Any]], service: str, local_stack: LocalStack, target: str
) -> None:
    pid = child_pids(local_stack.var_dir)[service]
    wrong = {}
    for name, (expected, make) in cases.items():
        code, details = _code(make)
        _outcomes[f"{service}: {name}"] = code.name
        if code not in expected:
            wrong[name] = f"{code.name} (expected {'/'.join(sorted(c.name for c in expected))}): {details[:200]}"
    os.kill(pid, 0)  # raises if the server died
    assert probes.grpc_serving(target), f"the {service} server is not SERVING after hostile messages"
    assert not wrong, f"imprecise statuses from the {service} server: {wrong}"


def test_tokenizer_answers_hostile_messages_precisely(
    local_stack: LocalStack, channels: dict[str, grpc.Channel]
) -> None:
    stub = tokenizer_pb2_grpc.TokenizerStub(channels["tokenizer"])
    _assert_cases(_tokenizer_cases(stub), "tokenizer", local_stack, local_stack.ready.tokenizer_target)
    ok = stub.Tokenize(tokenizer_pb2.TokenizeRequest(model_name=TEXT_MODEL, texts=["still fine"]), timeout=TIMEOUT)
    assert "input_ids" in ok.tensors


def test_model_server_answers_hostile_messages_precisely(
    local_stack: LocalStack, channels: dict[str, grpc.Channel]
) -> None:
    stub = model_server_pb2_grpc.ModelServerStub(channels["model"])
    _assert_cases(_model_cases(stub), "model", local_stack, local_stack.ready.model_server_target)
    ok = stub.Predict(model_server_pb2.PredictRequest(model_name=TEXT_MODEL, inputs=_good_inputs()), timeout=TIMEOUT)
    assert ok.outputs


@pytest.mark.parametrize("shape", [[2**32, 2**32], [0, 2**62], [2**62, 4]])
def test_tensor_codec_refuses_shapes_that_overflow(shape: list[int]) -> None:
    """The one codec both servers use: an absurd shape is the caller's error (TensorDecodeError naming the tensor),
    not a numpy ValueError that the servers report as INTERNAL."""
    with pytest.raises(TensorDecodeError, match="input_ids"):
        from_proto(_ids(shape), "input_ids")
