"""The benches' load-generator HTTP client against a real HTTP/1.1 server on loopback (the standard library's):
keep-alive, headers, statuses, and a refusal of what it does not read."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from bench.http_load import HttpLoadError, JsonConnection

pytestmark = pytest.mark.integration


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    connections: ClassVar[set[tuple[str, int]]] = set()

    def do_POST(self) -> None:
        type(self).connections.add(self.client_address)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        route = self.path.removeprefix("/api")  # the clients' base path
        if route == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"2\r\n{}\r\n0\r\n\r\n")
            return
        reply = json.dumps({"path": self.path, "body": body, "key": self.headers.get("Authorization")}).encode()
        self.send_response(404 if route == "/missing" else 200)
        self.send_header("Content-Length", str(len(reply)))
        if route == "/close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.connections = set()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/api"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_posts_json_over_one_kept_alive_connection_with_the_given_headers(server: str) -> None:
    async def go() -> list[tuple[int, bytes]]:
        async with JsonConnection(server, {"Authorization": "Bearer k1"}) as http:
            return [await http.post(f"/qa/user/{i}", {"query": f"q{i}"}) for i in range(3)]

    replies = asyncio.run(go())
    for i, (status, raw) in enumerate(replies):
        assert status == 200
        assert json.loads(raw) == {"path": f"/api/qa/user/{i}", "body": {"query": f"q{i}"}, "key": "Bearer k1"}
    assert len(_Handler.connections) == 1  # three requests, one connection


def test_statuses_come_back_and_a_closed_connection_is_opened_again(server: str) -> None:
    async def go() -> tuple[int, int, int]:
        async with JsonConnection(server) as http:
            missing, _ = await http.post("/missing", {})
            closed, _ = await http.post("/close", {})
            again, _ = await http.post("/after", {})
            return missing, closed, again

    assert asyncio.run(go()) == (404, 200, 200)
    assert len(_Handler.connections) == 2  # the server closed the first one


def test_a_body_without_content_length_is_refused_not_misread(server: str) -> None:
    async def go() -> None:
        async with JsonConnection(server) as http:
            await http.post("/chunked", {})

    with pytest.raises(HttpLoadError, match="without Content-Length"):
        asyncio.run(go())
    with pytest.raises(ValueError, match="an http:// URL"):
        JsonConnection("https://127.0.0.1:1/")
