"""The load generator's HTTP client: one keep-alive HTTP/1.1 connection per closed-loop worker, JSON POSTs.

The load generator runs on the same 2 cores as the service it measures, so whatever CPU it spends per request is
taken from the service. httpx cost the bench process 4.6 ms of CPU per request at c=32 (scale run 5), as much as
two thirds of the search service's own 7.1 ms; a client needs only to write a request and read a Content-Length
body, which this does in a fraction of that. It speaks just what the search service answers (uvicorn: HTTP/1.1,
Content-Length, keep-alive) and refuses anything else loudly rather than misreading it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit


class HttpLoadError(Exception):
    pass


class JsonConnection:
    """One connection to `url`'s host; `post` may be awaited by one caller at a time (a closed-loop worker)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"{url!r}: an http:// URL with a host is needed")
        self.host, self.port = parts.hostname, parts.port or 80
        self.base = parts.path.rstrip("/")
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head = f"Host: {parts.netloc}\r\nContent-Type: application/json\r\n{extra}"
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> JsonConnection:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            # The peer may already have gone away: the connection is closed either way.
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def post(self, path: str, body: Any) -> tuple[int, bytes]:
        """POST `body` as JSON; the status and the raw response body."""
        payload = json.dumps(body).encode()
        request = f"POST {self.base}{path} HTTP/1.1\r\n{self._head}Content-Length: {len(payload)}\r\n\r\n"
        return await asyncio.wait_for(self._exchange(request.encode() + payload), self.timeout)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(status_line.split(" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise HttpLoadError(f"not an HTTP status line: {status_line!r}") from exc
        headers = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise HttpLoadError(f"status {status} without Content-Length ({headers}): this client reads no other")
        body = await self._reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, body
