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
