"""TEST DOUBLE of Consul's KV HTTP API (no Consul agent can be installed here; production uses a real Consul).

Implements what the search service and `mmsearch config` use, with Consul's semantics:
- GET /v1/kv/<key>: JSON list of {Key, Value (base64), CreateIndex, ModifyIndex, LockIndex, Flags}, or 404;
  `?raw` returns the bare value; every answer carries `X-Consul-Index`.
- Blocking queries: `?index=N&wait=5s` holds the answer until the key changes past N or the wait ends.
- PUT /v1/kv/<key> (body = value) with optional `?cas=N` (0: only if absent) -> `true` / `false`.
- DELETE /v1/kv/<key> with optional `?cas=N`.
Bound to 127.0.0.1 only. `stop()` then `start()` on the same port simulates an outage.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_WAIT = 600.0


def parse_wait(text: str | None, default: float = 300.0) -> float:
    if not text:
        return default
    parts = re.findall(r"([\d.]+)(ns|us|ms|s|m|h)", text)
    if not parts:
        raise ValueError(f"bad wait {text!r}")
    return min(MAX_WAIT, sum(float(n) * _UNITS[u] for n, u in parts))


@dataclass
class _Entry:
    value: bytes
    create_index: int
    modify_index: int
    flags: int = 0


class ConsulKVDouble:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._data: dict[str, _Entry] = {}
        self._key_index: dict[str, int] = {}  # last index at which each key changed (set or deleted)
        self._index = 1
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests = 0  # GETs answered, for tests that check blocking (few requests while idle)
        # Open client connections: an agent that goes down drops them too (clients keep HTTP/1.1 connections alive).
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    # ---- lifecycle
    def start(self) -> ConsulKVDouble:
        handler = _make_handler(self)
        server = ThreadingHTTPServer((self.host, self.port), handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="consul-kv-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._cond:
            self._cond.notify_all()
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # ---- direct access for tests
    def put(self, key: str, value: bytes | str, cas: int | None = None) -> bool:
        data = value.encode() if isinstance(value, str) else value
        with self._cond:
            have = self._data.get(key)
            if cas is not None and (
                (cas == 0 and have is not None) or (cas != 0 and (have is None or have.modify_index != cas))
            ):
                return False
            self._index += 1
            self._data[key] = _Entry(
                data, have.create_index if have else self._index, self._index, have.flags if have else 0
            )
            self._key_index[key] = self._index
            self._cond.notify_all()
            return True

    def delete(self, key: str, cas: int | None = None) -> bool:
        with self._cond:
            have = self._data.get(key)
            if cas is not None and (have is None or have.modify_index != cas):
                return False
            if have is not None:
                self._index += 1
                del self._data[key]
                self._key_index[key] = self._index
                self._cond.notify_all()
            return True

    def get(self, key: str, index: int | None = None, wait: float = 0.0) -> tuple[int, _Entry | None]:
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                # A key never written reports the store's index, as Consul reports its table index.
                current = max(1, self._key_index.get(key, self._index))
                if index is None or current > index or self._server is None:
                    return current, self._data.get(key)
                left = deadline - time.monotonic()
                if left <= 0:
                    return current, self._data.get(key)
                self._cond.wait(left)


def _make_handler(kv: ConsulKVDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            with kv._conns_lock:
                kv._conns.add(self.connection)

        def finish(self) -> None:
            with kv._conns_lock:
                kv._conns.discard(self.connection)
            super().finish()

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _key(self) -> tuple[str | None, dict[str, list[str]]]:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query, keep_blank_values=True)
            if not parts.path.startswith("/v1/kv/"):
                return None, query
            return unquote(parts.path[len("/v1/kv/") :]), query

        def _send(self, code: int, body: bytes, index: int | None = None, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if index is not None:
                self.send_header("X-Consul-Index", str(index))
                self.send_header("X-Consul-KnownLeader", "true")
                self.send_header("X-Consul-LastContact", "0")
            self.end_headers()
            # A client that gave up on a blocking query (shutting down) needs no answer.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def do_GET(self) -> None:
            key, q = self._key()
            if key is None:
                self._send(404, b"not found", ctype="text/plain")
                return
            try:
                index = int(q["index"][0]) if "index" in q else None
                wait = parse_wait(q["wait"][0] if "wait" in q else None) if index is not None else 0.0
            except ValueError as exc:
                self._send(400, str(exc).encode(), ctype="text/plain")
                return
            current, entry = kv.get(key, index, wait)
            kv.requests += 1
            if entry is None:
                self._send(404, b"", current)
                return
            if "raw" in q:
                self._send(200, entry.value, current, "application/octet-stream")
                return
            body = [
                {
                    "Key": key,
                    "Value": base64.b64encode(entry.value).decode() if entry.value else None,
                    "CreateIndex": entry.create_index,
                    "ModifyIndex": entry.modify_index,
                    "LockIndex": 0,
                    "Flags": entry.flags,
                }
            ]
            self._send(200, json.dumps(body).encode(), current)

        def do_PUT(self) -> None:
            key, q = self._key()
            length = int(self.headers.get("Content-Length") or 0)
            value = self.rfile.read(length) if length else b""
            if key is None:
                self._send(404, b"not found", ctype="text/plain")
                return
            cas = int(q["cas"][0]) if "cas" in q else None
            ok = kv.put(key, value, cas)
            self._send(200, b"true" if ok else b"false", kv.get(key)[0])

        def do_DELETE(self) -> None:
            key, q = self._key()
            if key is None:
                self._send(404, b"not found", ctype="text/plain")
                return
            cas = int(q["cas"][0]) if "cas" in q else None
            ok = kv.delete(key, cas)
            self._send(200, b"true" if ok else b"false", kv.get(key)[0])

    return Handler
