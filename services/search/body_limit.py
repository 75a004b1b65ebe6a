"""Refuse request bodies over a size limit with 413 in the one error shape, before anything parses them.

Starlette reads a body whole, whatever its size: without this, one 1 GB POST to /feedback would be held in memory
before validation could say the body is wrong. A declared Content-Length over the limit is refused at once; a
chunked body is read up to the limit and refused as soon as it passes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    def __init__(self, app: ASGIApp, *, default_bytes: int, by_prefix: Sequence[tuple[str, int]] = ()) -> None:
        """`by_prefix`: (path prefix, bytes) for the routes whose bodies may be larger (uploads, document batches)."""
        self.app = app
        self.default_bytes = default_bytes
        self.by_prefix = tuple(by_prefix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = next((n for prefix, n in self.by_prefix if path.startswith(prefix)), self.default_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        # Read the body here (it is small by now, or refused), then hand the app the same messages.
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                await _too_large(send, limit)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        {"error": "body_too_large", "message": f"request body over {limit} bytes", "dependency": None}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
