"""Server-side dynamic batching for one model (the infinity / Triton scheme).

Requests become items on a bounded queue; one worker task takes what is queued, sorts it by sequence length
(so a batch carries little padding), cuts groups of at most `max_batch_size` rows, pads the token tensors of a
group to its longest member with 0 (attention_mask 0 makes padding inert), runs ONE ONNX Runtime call per group
in the thread pool and hands each request its rows back, with sequence outputs cropped to its own length.

A request of several rows (a reranker's pairs, several texts), right-padded by its tokenizer to its longest row,
is split into rows, each cut to its own length (its attention mask), and the rows are batched like requests: the
padding a request brings with it is not computed (36% of a rerank's tokens on the FAQ answers; bench/RESULTS.md).
The request gets its rows back in order, sequence outputs padded with 0 to its own length again.

While a group runs, new requests queue up and form the next group, so under load batches form by themselves
without any waiting. `max_queue_delay_ms` only applies when the model is idle and requests arrive in a burst:
the worker then waits up to that long for the burst to fill the batch. A lone request (previous arrival longer
ago than the delay) is never delayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from services.model_server.metrics import ServingMetrics

log = logging.getLogger(__name__)

Arrays = dict[str, npt.NDArray[Any]]
MASK = "attention_mask"  # a text model's input whose ones mark a row's tokens (the rest is padding)
# Blocking: inputs and output names -> outputs. Runs in the thread pool.
RunFn = Callable[[Arrays, list[str]], Arrays]


class QueueFullError(Exception):
    pass


class BatcherStoppedError(Exception):
    pass


@dataclass(frozen=True)
class BatchingPlan:
    """Which axes vary between requests, from the manifest (see signature.padded_axes / output_dynamic_axes)."""

    padded_axes: dict[str, dict[int, str]]  # input -> {axis: symbol} of the non-batch dynamic axes
    output_axes: dict[str, dict[int, str]]  # output -> {axis: symbol}


@dataclass
class _Item:
    inputs: Arrays
    outputs: list[str]
    rows: int
    dims: dict[str, int]  # symbol -> this request's size (e.g. "sequence" -> 12)
    future: asyncio.Future[Arrays]
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def length(self) -> int:
        return max(self.dims.values(), default=0)


class DynamicBatcher:
    def __init__(
        self,
        key: str,
        run: RunFn,
        executor: Executor,
        plan: BatchingPlan,
        metrics: ServingMetrics,
        *,
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue_size: int,
        concurrency: int = 1,
        split_padding_tokens: int = 0,
    ) -> None:
        self.key = key
        self._run = run
        self._executor = executor
        self._plan = plan
        self._metrics = metrics
        self.max_batch_size = max(1, max_batch_size)
        self.max_delay = max(0.0, max_queue_delay_ms) / 1000
        self.max_queue_size = max(1, max_queue_size)
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._last_arrival = 0.0
        self._previous_gap = float("inf")
        self.concurrency = max(1, concurrency)
        self.split_padding_tokens = split_padding_tokens
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    def start(self) -> None:
        # Each worker runs one ORT call at a time; with several, one forms the next batch while another runs.
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"batcher-{self.key}-{i}") for i in range(self.concurrency)
        ]

    async def submit(self, inputs: Arrays, outputs: list[str], rows: int) -> Arrays:
        lengths = self._row_lengths(inputs, rows)
        if lengths is None:
            parts = [(inputs, rows)]
        else:
            parts = [
                ({name: np.ascontiguousarray(a[i : i + 1, :n]) for name, a in inputs.items()}, 1)
                for i, n in enumerate(lengths)
            ]
        if self._stopped:
            raise BatcherStoppedError(f"model {self.key!r} is being unloaded")
        if len(self._queue) + len(parts) > self.max_queue_size:
            raise QueueFullError(
                f"model {self.key!r}: queue is full ({len(self._queue)} waiting, limit {self.max_queue_size}); "
                "retry later or add capacity"
            )
        # One arrival per request, however many rows it brings: a lone request is never held for a burst.
        now = time.perf_counter()
        self._previous_gap, self._last_arrival = now - self._last_arrival, now
        loop = asyncio.get_running_loop()
        items = [_Item(part, outputs, n, self._dims(part), loop.create_future()) for part, n in parts]
        self._queue.extend(items)
        self._metrics.queue_depth.labels(self.key).set(len(self._queue))
        self._wakeup.set()
        # Every row's outcome is taken (return_exceptions), so a second failed row is not an unretrieved error.
        outcomes = await asyncio.gather(*(it.future for it in items), return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            raise failed[0]
        results = [o for o in outcomes if not isinstance(o, BaseException)]
        if lengths is None:
            return results[0]
        full = {symbol: int(inputs[MASK].shape[axis]) for axis, symbol in self._plan.padded_axes[MASK].items()}
        return {name: self._join(name, [r[name] for r in results], full) for name in outputs}

    def _dims(self, inputs: Arrays) -> dict[str, int]:
        return {
            symbol: int(inputs[name].shape[axis])
            for name, axes in self._plan.padded_axes.items()
            for axis, symbol in axes.items()
        }

    def _row_lengths(self, inputs: Arrays, rows: int) -> list[int] | None:
        """Each row's length from the attention mask when the request can be split into rows: several rows, one
        padded axis (the sequence) shared by every input, and right padding (a row's mask is ones, then zeros)."""
        mask = inputs.get(MASK)
        sequence = self._plan.padded_axes.get(MASK, {})
        if rows < 2 or mask is None or mask.ndim != 2 or mask.shape[0] != rows or list(sequence) != [1]:
            return None
        if any(self._plan.padded_axes.get(name) != sequence or a.shape[:2] != mask.shape for name, a in inputs.items()):
            return None
        lengths = [int(n) for n in mask.sum(axis=1)]
        width = mask.shape[1]
        if min(lengths) < 1 or any(mask[i, :n].min() != 1 or mask[i, n:].any() for i, n in enumerate(lengths)):
            return None
        if max(lengths) == width and min(lengths) == width:
            return None  # nothing to cut: one request, one group
        return lengths

    def _join(self, name: str, parts: list[npt.NDArray[Any]], full: dict[str, int]) -> npt.NDArray[Any]:
        """A request's rows again, sequence outputs padded (0) to the request's length as it was sent."""
        axes = self._plan.output_axes.get(name, {})
        padded = []
        for part in parts:
            pad = [(0, 0)] * part.ndim
            for axis, symbol in axes.items():
                if symbol in full and axis < part.ndim:
                    pad[axis] = (0, full[symbol] - part.shape[axis])
            padded.append(np.pad(part, pad) if any(p != (0, 0) for p in pad) else part)
        return np.concatenate(padded, axis=0)

    async def stop(self) -> None:
        """Finish what is queued, then end the worker."""
        self._stopped = True
        self._wakeup.set()
        await asyncio.gather(*self._tasks)
        self._tasks = []

    async def _worker(self) -> None:
        while True:
            if not self._queue:
                if self._stopped:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._gather_burst()
            groups = self._take_groups()
            self._metrics.queue_depth.labels(self.key).set(len(self._queue))
            for group in groups:
                await self._run_group(group)

    async def _gather_burst(self) -> None:
        """When requests arrive close together (a burst), give the batch up to max_delay to fill."""
        if self.max_delay <= 0 or self._previous_gap > self.max_delay or self._stopped:
            return
        deadline = self._queue[0].enqueued + self.max_delay
        while self._queued_rows() < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _queued_rows(self) -> int:
        return sum(item.rows for item in self._queue)

    def _take_groups(self) -> list[list[_Item]]:
        # Take up to a few batches' worth, shortest first: similar lengths share a group, so little padding.
        taken: list[_Item] = []
        rows = 0
        while self._queue and rows < 4 * self.max_batch_size:
            item = self._queue.popleft()
            taken.append(item)
            rows += item.rows
        taken.sort(key=lambda it: it.length)
        groups: list[list[_Item]] = []
        current: list[_Item] = []
        current_rows = current_length = 0
        for item in taken:
            # Adding a longer request pads every row already in the group to its length; past a point that
            # wasted compute costs more than a separate ORT call would.
            repad = current_rows * (item.length - current_length)
            too_much_padding = self.split_padding_tokens > 0 and repad > self.split_padding_tokens
            if current and (current_rows + item.rows > self.max_batch_size or too_much_padding):
                groups.append(current)
                current, current_rows = [], 0
            current.append(item)
            current_rows += item.rows
            current_length = item.length
        if current:
            groups.append(current)
        return groups

    async def _run_group(self, group: list[_Item]) -> None:
        live = [it for it in group if not it.future.cancelled()]  # callers that gave up (deadline) are dropped
        if not live:
            return
        start = time.perf_counter()
        for it in live:
            self._metrics.queue_wait.labels(self.key).observe(start - it.enqueued)
        loop = asyncio.get_running_loop()
        outputs = list(dict.fromkeys(name for it in live for name in it.outputs))
        try:
            merged = await loop.run_in_executor(self._executor, self._run, self._merge(live), outputs)
        except Exception as exc:  # noqa: BLE001 (not swallowed: handed to the waiting request)
            if len(live) == 1:
                _resolve(live[0].future, exc)
                return
            # One request's bad values (e.g. a token id out of the vocabulary) must not fail the others:
            # run each alone so only the guilty one gets the error.
            log.info("model %r: batch of %d failed (%s); retrying its requests one by one", self.key, len(live), exc)
            for it in live:
                await self._run_group([it])
            return
        self._metrics.inference.labels(self.key).observe(time.perf_counter() - start)
        self._metrics.batch_size.labels(self.key).observe(sum(it.rows for it in live))
        self._metrics.requests_per_batch.labels(self.key).observe(len(live))
        offset = 0
        for it in live:
            part = {name: self._crop(name, merged[name][offset : offset + it.rows], it) for name in it.outputs}
            offset += it.rows
            _resolve(it.future, part)

    def _merge(self, group: list[_Item]) -> Arrays:
        if len(group) == 1:
            return group[0].inputs
        target = {s: max(it.dims[s] for it in group) for it in group[:1] for s in it.dims}
        merged: Arrays = {}
        for name in group[0].inputs:
            axes = self._plan.padded_axes.get(name, {})
            parts = []
            for it in group:
                array = it.inputs[name]
                pad = [(0, 0)] * array.ndim
                for axis, symbol in axes.items():
                    pad[axis] = (0, target[symbol] - array.shape[axis])
                parts.append(np.pad(array, pad) if any(p != (0, 0) for p in pad) else array)
            merged[name] = np.concatenate(parts, axis=0)
        return merged

    def _crop(self, name: str, array: npt.NDArray[Any], item: _Item) -> npt.NDArray[Any]:
        """Cut a sequence output (token_embeddings) back to the request's own length."""
        index: list[slice] = [slice(None)] * array.ndim
        for axis, symbol in self._plan.output_axes.get(name, {}).items():
            if symbol in item.dims and axis < array.ndim:
                index[axis] = slice(0, item.dims[symbol])
        return np.ascontiguousarray(array[tuple(index)])


def _resolve(future: asyncio.Future[Arrays], result: Arrays | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
