"""Request failures as gRPC statuses: servicers raise RpcStatusError, `RpcRunner` turns it into the status."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import grpc
from grpc import aio

from mmsearch.grpc_common.metrics import RpcMetrics

T = TypeVar("T")


class RpcStatusError(Exception):
    """A request that cannot be served, with the status the caller gets and a message saying what to fix."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code.name}: {message}")


def invalid_argument(message: str) -> RpcStatusError:
    return RpcStatusError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(what: str, key: str, available: list[str]) -> RpcStatusError:
    have = ", ".join(available) if available else "none"
    return RpcStatusError(grpc.StatusCode.NOT_FOUND, f"{what} {key!r} not found (available: {have})")


class RpcRunner:
    """Runs one servicer method: metrics (count, latency, errors by code), logging, and status mapping."""

    def __init__(self, metrics: RpcMetrics, log: logging.Logger) -> None:
        self.metrics = metrics
        self.log = log

    async def run(
        self, method: str, model: str, context: aio.ServicerContext[object, object], body: Callable[[], Awaitable[T]]
    ) -> T:
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await body()
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the caller gave up (deadline, disconnect)
            raise
        except RpcStatusError as exc:
            code = exc.code
            self.log.info("%s %s -> %s: %s", method, model, exc.code.name, exc.message)
            await _abort(context, exc.code, exc.message)
        except Exception as exc:
            # Not a request problem: a bug or a broken dependency. Logged with its traceback, reported as INTERNAL.
            code = grpc.StatusCode.INTERNAL
            self.log.exception("%s %s failed", method, model)
            await _abort(context, code, f"internal error in {method}: {type(exc).__name__}: {exc}")
        finally:
            self.metrics.observe(method, model, code, time.perf_counter() - start)


# The status message travels in trailing metadata, which clients cap at 16 KiB (after percent-encoding: up to 12
# bytes per character). A message echoing a huge input (a 1 MB model name) would otherwise reach the caller as
# RESOURCE_EXHAUSTED "Stream removed" instead of its real status.
MAX_STATUS_MESSAGE_CHARS = 1000


async def _abort(context: aio.ServicerContext[object, object], code: grpc.StatusCode, message: str) -> NoReturn:
    if len(message) > MAX_STATUS_MESSAGE_CHARS:
        cut = len(message) - MAX_STATUS_MESSAGE_CHARS
        message = f"{message[:MAX_STATUS_MESSAGE_CHARS]}... ({cut} more characters cut)"
    await context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover
