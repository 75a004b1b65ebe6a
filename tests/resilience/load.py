"""A bounded HTTP load generator: N client threads, each with one keep-alive connection, for a fixed time.

Every request is recorded (start offset, latency, status, the error body's dependency) so tests can count failures
per window and check that no request outlived its timeout bound. Threads, not asyncio: each client then behaves
like an independent caller, and a slow answer holds up only its own client.
"""

from __future__ import annotations

import http.client
import itertools
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

Validator = Callable[[Any], "str | None"]  # a 200's parsed body -> what is wrong with it, or None
STATUS_NO_ANSWER = 0  # connection refused/reset or client timeout: no HTTP status at all


@dataclass(frozen=True)
class Sample:
    start: float  # seconds since the load started
    seconds: float
    status: int
    dependency: str | None = None  # the 503 body's "dependency"
    error: str | None = None  # the error body's "error", or the client-side exception

    @property
    def end(self) -> float:
        return self.start + self.seconds

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


@dataclass
class LoadHandle:
    t0: float
    samples: list[Sample] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def snapshot(self) -> list[Sample]:
        with self.lock:
            return list(self.samples)

    def since(self, t: float) -> list[Sample]:
        return [s for s in self.snapshot() if s.start >= t]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def summarize(samples: Sequence[Sample]) -> dict[str, object]:
    ok = [s.seconds for s in samples if s.ok]
    failed = [s for s in samples if not s.ok]
    by_status: dict[str, int] = {}
    for s in failed:
        key = "200 with a wrong body" if s.status == 200 else str(s.status)
        by_status[key] = by_status.get(key, 0) + 1
    return {
        "requests": len(samples),
        "errors": len(failed),
        "errors_by_status": by_status,
        "p50_ms": round(percentile(ok, 50) * 1000, 2),
        "p99_ms": round(percentile(ok, 99) * 1000, 2),
        "max_ms": round(max(ok, default=0.0) * 1000, 2),
        # How fast the failures were (a 503 must come back quickly, not at the client's timeout).
        "failed_p50_ms": round(percentile([s.seconds for s in failed], 50) * 1000, 2),
        "failed_max_ms": round(max((s.seconds for s in failed), default=0.0) * 1000, 2),
    }


def faq_bodies(questions: Sequence[str]) -> Callable[[int], dict[str, object]]:
    """Request bodies cycling through real questions (so the model, Milvus and MongoDB all do real work), each text
    made unique by its load and request number: the query-embedding cache must not answer for the tokenizer and model
    server whose faults these tests inject."""

    run = uuid.uuid4().hex[:8]  # unique across loads too: every load of the session restarts at request 0

    def body(i: int) -> dict[str, object]:
        return {"query": f"{questions[i % len(questions)]} ({run}-{i})"}

    return body


def _client(  # noqa: PLR0917 - a thread target takes its arguments positionally
    handle: LoadHandle,
    base_url: str,
    path: Callable[[int], str],
    body: Callable[[int], dict[str, object]],
    counter: Iterator[int],
    deadline: float,
    timeout: float,
    max_requests: int,
    validate: Validator | None,
    headers: dict[str, str],
) -> None:
    parts = urlsplit(base_url)
    conn: http.client.HTTPConnection | None = None
    done = 0
    while not handle.stop.is_set() and time.monotonic() < deadline and done < max_requests:
        i = next(counter)
        payload = json.dumps(body(i)).encode()
        if conn is None:
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
        start = time.monotonic()
        status, dep, err = STATUS_NO_ANSWER, None, None
        try:
            conn.request("POST", path(i), body=payload, headers={"Content-Type": "application/json", **headers})
            reply = conn.getresponse()
            data = reply.read()
            status = reply.status
            if status == 200 and validate is not None:
                err = validate(json.loads(data))  # a 200 with a wrong body (e.g. no hits) is a failure too
            elif status != 200:
                try:
                    parsed = json.loads(data)
                except ValueError:
                    parsed = {}
                if isinstance(parsed, dict):
                    dep = parsed.get("dependency")
                    err = str(parsed.get("error") or parsed.get("detail") or "")[:200]
        except (OSError, http.client.HTTPException) as exc:
            err = f"{type(exc).__name__}: {exc}"[:200]
            conn.close()
            conn = None
        sample = Sample(start - handle.t0, time.monotonic() - start, status, dep, err)
        with handle.lock:
            handle.samples.append(sample)
        done += 1
        if status == STATUS_NO_ANSWER:
            time.sleep(0.05)  # a refused connection returns at once: don't spin
    if conn is not None:
        conn.close()


@contextmanager
def load(
    base_url: str,
    *,
    clients: int,
    seconds: float,
    body: Callable[[int], dict[str, object]],
    path: Callable[[int], str] = lambda i: f"/qa/user/{i % 1000}",
    timeout: float = 30.0,
    max_requests_per_client: int = 100_000,
    validate: Validator | None = None,
    headers: dict[str, str] | None = None,
) -> Iterator[LoadHandle]:
    """Run `clients` threads against base_url for at most `seconds` (bounded in time and count); the context
    exit stops them and joins them (each finishes its request in flight, bounded by `timeout`)."""
    handle = LoadHandle(t0=time.monotonic())
    deadline = handle.t0 + seconds
    counter = itertools.count()
    threads = [
        threading.Thread(
            target=_client,
            args=(
                handle,
                base_url,
                path,
                body,
                counter,
                deadline,
                timeout,
                max_requests_per_client,
                validate,
                headers or {},
            ),
            name=f"load-client-{n}",
            daemon=True,
        )
        for n in range(clients)
    ]
    for t in threads:
        t.start()
    try:
        yield handle
    finally:
        handle.stop.set()
        for t in threads:
            t.join(timeout=timeout + 5)


def wait_load_done(handle: LoadHandle, seconds: float) -> None:
    """Sleep until the load's planned end (the clients stop themselves at their deadline)."""
    remaining = seconds - handle.now()
    if remaining > 0:
        time.sleep(remaining)
