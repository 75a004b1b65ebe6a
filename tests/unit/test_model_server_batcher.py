"""The dynamic batcher with a real numpy model: grouping, padding, cropping, ordering, bounds and isolation."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import CollectorRegistry

from services.model_server.batcher import Arrays, BatchingPlan, DynamicBatcher, QueueFullError
from services.model_server.metrics import ServingMetrics

PLAN = BatchingPlan(
    padded_axes={"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}},
    output_axes={"pooled": {}, "tokens": {1: "sequence"}},
)


class MaskedMeanModel:
    """Mean of the ids under the mask (padding-invariant like a real encoder) plus per-token values."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[int] = []
        self.gate = gate

    def __call__(self, inputs: Arrays, outputs: list[str]) -> Arrays:
        if self.gate is not None:
            self.gate.wait(timeout=10)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if (ids < 0).any():
            raise ValueError("negative token id")
        self.calls.append(ids.shape[0])
        pooled = (ids * mask).sum(axis=1, keepdims=True) / mask.sum(axis=1, keepdims=True)
        result = {"pooled": pooled.astype(np.float32), "tokens": (ids * 10).astype(np.float32)[..., None]}
        return {name: result[name] for name in outputs}


def request(values: list[int]) -> dict[str, npt.NDArray[np.int64]]:
    ids = np.asarray([values], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def make(model: MaskedMeanModel, executor: ThreadPoolExecutor, **opts: Any) -> DynamicBatcher:
    settings = {"max_batch_size": 8, "max_queue_delay_ms": 0.0, "max_queue_size": 100, **opts}
    return DynamicBatcher("m", model, executor, PLAN, ServingMetrics(CollectorRegistry()), **settings)


@pytest.fixture
def executor() -> Any:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def test_concurrent_requests_share_calls_and_get_their_own_rows(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    model = MaskedMeanModel(gate)
    requests = [request(list(range(1, n + 2))) for n in range(12)]  # lengths 2..13

    async def go() -> list[Arrays]:
        batcher = make(model, executor)
        batcher.start()
        # The first call blocks until every request is queued, so the rest must be grouped.
        tasks = [asyncio.ensure_future(batcher.submit(r, ["pooled", "tokens"], 1)) for r in requests]
        await asyncio.sleep(0.05)
        gate.set()
        out = list(await asyncio.gather(*tasks))
        await batcher.stop()
        return out

    results = asyncio.run(go())
    for req, out in zip(requests, results, strict=True):
        ids = req["input_ids"]
        np.testing.assert_allclose(out["pooled"], [[ids.mean()]])
        # Sequence outputs are cropped back to the request's own length, not the group's.
        assert out["tokens"].shape == (1, ids.shape[1], 1)
        np.testing.assert_array_equal(out["tokens"][..., 0], ids * 10)
    assert sum(model.calls) == 12
    assert max(model.calls) == 8  # max_batch_size
    assert len(model.calls) < 12


def test_queue_bound_fails_fast(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    model = MaskedMeanModel(gate)

    async def go() -> list[BaseException | Arrays]:
        batcher = make(model, executor, max_queue_size=2, max_batch_size=1)
        batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit(request([1, 2]), ["pooled"], 1)) for _ in range(6)]
        await asyncio.sleep(0.05)
        gate.set()
        out = list(await asyncio.gather(*tasks, return_exceptions=True))
        await batcher.stop()
        return out

    results = asyncio.run(go())
    refused = [r for r in results if isinstance(r, QueueFullError)]
    served = [r for r in results if isinstance(r, dict)]
    # All six arrive before the worker runs: two fit the queue, the other four are refused at once.
    assert (len(served), len(refused)) == (2, 4)
    assert "queue is full" in str(refused[0])


def test_one_bad_request_does_not_fail_its_batch(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    model = MaskedMeanModel(gate)

    async def go() -> list[BaseException | Arrays]:
        batcher = make(model, executor)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(request([5]), ["pooled"], 1))
        await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(batcher.submit(request(v), ["pooled"], 1)) for v in ([1, 2], [-1], [3])]
        await asyncio.sleep(0.05)
        gate.set()
        out = list(await asyncio.gather(first, *rest, return_exceptions=True))
        await batcher.stop()
        return out

    results = asyncio.run(go())
    assert isinstance(results[2], ValueError)
    for i, want in ((0, 5.0), (1, 1.5), (3, 3.0)):
        out = results[i]
        assert isinstance(out, dict)
        np.testing.assert_allclose(out["pooled"], [[want]])


def test_burst_waits_for_company_but_a_lone_request_does_not(executor: ThreadPoolExecutor) -> None:
    model = MaskedMeanModel()

    async def go() -> None:
        batcher = make(model, executor, max_queue_delay_ms=200.0)
        batcher.start()
        await batcher.submit(request([1]), ["pooled"], 1)  # lone: no previous arrival within the delay
        await asyncio.sleep(0.3)
        await batcher.submit(request([1]), ["pooled"], 1)
        # A burst: arrivals close together are held up to the delay and run as one call.
        await asyncio.gather(*(batcher.submit(request([i + 1]), ["pooled"], 1) for i in range(4)))
        await batcher.stop()

    asyncio.run(go())
    assert model.calls[:2] == [1, 1]
    assert sum(model.calls[2:]) == 4
    assert len(model.calls[2:]) <= 2


@pytest.mark.parametrize(("split", "calls"), [(0, [1, 5]), (10, [1, 4, 1])])
def test_a_much_longer_request_gets_its_own_call(executor: ThreadPoolExecutor, split: int, calls: list[int]) -> None:
    gate = threading.Event()
    model = MaskedMeanModel(gate)

    async def go() -> list[Arrays]:
        batcher = make(model, executor, split_padding_tokens=split)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(request([1, 2]), ["pooled"], 1))
        await asyncio.sleep(0.05)  # the worker holds the first request at the gate; the rest queue up
        rest = [request([3, 4]) for _ in range(4)] + [request(list(range(1, 41)))]
        tasks = [asyncio.ensure_future(batcher.submit(r, ["pooled", "tokens"], 1)) for r in rest]
        await asyncio.sleep(0.05)
        gate.set()
        out = list(await asyncio.gather(first, *tasks))
        await batcher.stop()
        return out

    results = asyncio.run(go())
    # Padding 4 rows from 2 to 40 tokens wastes 152 tokens: over a split of 10, under none.
    assert model.calls == calls
    np.testing.assert_allclose(results[-1]["pooled"], [[20.5]])
    assert results[-1]["tokens"].shape == (1, 40, 1)
    assert results[1]["tokens"].shape == (1, 2, 1)


class ShapeRecordingModel(MaskedMeanModel):
    """Also keeps the sequence length of every call: what the model actually computed."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__(gate)
        self.widths: list[int] = []

    def __call__(self, inputs: Arrays, outputs: list[str]) -> Arrays:
        self.widths.append(int(inputs["input_ids"].shape[1]))
        return super().__call__(inputs, outputs)


def padded(rows: list[list[int]], *, left: bool = False) -> dict[str, npt.NDArray[np.int64]]:
    """One request of several rows padded to its longest with 0, as a tokenizer pads a batch (right by default)."""
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, cols], mask[i, cols] = r, 1
    return {"input_ids": ids, "attention_mask": mask}


def test_a_request_of_several_rows_is_batched_row_by_row_without_its_padding(executor: ThreadPoolExecutor) -> None:
    """A reranker's pairs arrive padded to the longest pair: each row runs at its own length, grouped with rows of
    the same length (here of another request), and the request gets its rows back in order at its own width."""
    gate = threading.Event()
    model = ShapeRecordingModel(gate)
    mixed = padded([[1] * 30, [2, 2], [3] * 30, [4, 4, 4]])
    other = padded([[5, 5], [6, 6, 6]])

    async def go() -> list[Arrays]:
        batcher = make(model, executor, split_padding_tokens=48)  # the model server's default
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(request([9]), ["pooled"], 1))
        await asyncio.sleep(0.05)  # the worker holds the first call at the gate; the rest queue up
        tasks = [
            asyncio.ensure_future(batcher.submit(r, ["pooled", "tokens"], 2 + 2 * (r is mixed))) for r in (mixed, other)
        ]
        await asyncio.sleep(0.05)
        gate.set()
        out = list(await asyncio.gather(first, *tasks))
        await batcher.stop()
        return out

    _, got_mixed, got_other = asyncio.run(go())
    # Computed: the 4 short rows together at width 3 and the 2 long ones at 30 (72 tokens), where the requests
    # whole cost 4 rows at 30 and 2 at 3 (126).
    assert sorted(zip(model.calls[1:], model.widths[1:], strict=True)) == [(2, 30), (4, 3)]
    np.testing.assert_allclose(got_mixed["pooled"], [[1.0], [2.0], [3.0], [4.0]])
    np.testing.assert_allclose(got_other["pooled"], [[5.0], [6.0]])
    # Sequence outputs: each row's own tokens, zeros where the request had padding.
    assert got_mixed["tokens"].shape == (4, 30, 1)
    np.testing.assert_array_equal(got_mixed["tokens"][1, :, 0], [20, 20] + [0] * 28)
    np.testing.assert_array_equal(got_mixed["tokens"][2, :, 0], [30] * 30)
    assert got_other["tokens"].shape == (2, 3, 1)


@pytest.mark.parametrize(
    "req",
    [
        padded([[1, 2, 3], [4]], left=True),  # left padding: cutting at the mask's sum would cut the tokens
        padded([[1, 2], [3, 4]]),  # one width: nothing to cut
    ],
)
def test_requests_that_cannot_or_need_not_be_cut_run_whole(executor: ThreadPoolExecutor, req: Arrays) -> None:
    model = ShapeRecordingModel()

    async def go() -> Arrays:
        batcher = make(model, executor)
        batcher.start()
        out = await batcher.submit(req, ["pooled", "tokens"], 2)
        await batcher.stop()
        return out

    out = asyncio.run(go())
    assert (model.calls, model.widths) == ([2], [req["input_ids"].shape[1]])
    assert out["tokens"].shape == (2, req["input_ids"].shape[1], 1)


def test_the_queue_bound_counts_the_rows_a_request_brings(executor: ThreadPoolExecutor) -> None:
    async def go() -> BaseException | Arrays:
        batcher = make(MaskedMeanModel(), executor, max_queue_size=3)
        # Not started: nothing leaves the queue. Four rows of different lengths do not fit three places.
        return (
            await asyncio.gather(batcher.submit(padded([[1], [2, 2], [3], [4]]), ["pooled"], 4), return_exceptions=True)
        )[0]

    assert isinstance(asyncio.run(go()), QueueFullError)


def test_one_bad_row_fails_its_request_and_not_the_other_rows_batched_with_it(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    model = MaskedMeanModel(gate)

    async def go() -> list[BaseException | Arrays]:
        batcher = make(model, executor)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(request([9]), ["pooled"], 1))
        await asyncio.sleep(0.05)
        bad = asyncio.ensure_future(batcher.submit(padded([[1, 2], [-1], [-2, -2, -2]]), ["pooled"], 3))
        good = asyncio.ensure_future(batcher.submit(request([7, 7]), ["pooled"], 1))
        await asyncio.sleep(0.05)
        gate.set()
        out = list(await asyncio.gather(first, bad, good, return_exceptions=True))
        await batcher.stop()
        return out

    _, bad, good = asyncio.run(go())
    assert isinstance(bad, ValueError)
    assert isinstance(good, dict)
    np.testing.assert_allclose(good["pooled"], [[7.0]])
