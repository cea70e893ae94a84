"""bench/http_load.py, the light load generator of the serving benchmarks, against a real HTTP/1.1 server (the
standard library's, keep-alive on): it must frame several responses on one kept-alive connection correctly, count
every non-200 answer as an error, and report its own CPU per request."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from bench import http_load


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every request of a client thread arrives on one connection
    connections: set[int] = set()

    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ok = self.headers.get("Authorization") == "Bearer good" and self.path == "/v1/search"
        # Replies of different sizes, so a client that misreads one response's end misreads the next one.
        data = json.dumps({"echo": body["query"], "pad": "x" * (len(body["query"]) * 37 % 5000)}).encode()
        self.connections.add(self.client_address[1])
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    _Echo.connections = set()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_every_request_is_answered_on_one_connection_per_client(server: str) -> None:
    qs = [f"question {i} " + "word " * i for i in range(60)]
    r = http_load.load(server, "good", qs, clients=3)
    assert r["requests"] == 60 and r["errors"] == 0
    assert len(_Echo.connections) == 3  # kept alive: one connection per client thread, not one per request
    assert 0 <= r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
    assert r["client_cpu_ms_per_request"] > 0


def test_non_200_answers_are_counted_as_errors(server: str) -> None:
    r = http_load.load(server, "wrong", ["a", "b", "c", "d"], clients=2)
    assert r["errors"] == 4


def test_a_response_is_read_to_its_content_length_across_reads(server: str) -> None:
    url = server.removeprefix("http://")
    host, port = url.split(":")
    conn = http_load.Connection(host, int(port))
    try:
        for q in ("long " * 2000, "short", "médium ✓"):
            status, body = conn.request(http_load.encode_post(url, "/v1/search", {"query": q}, "good"))
            assert status == 200 and json.loads(body)["echo"] == q
    finally:
        conn.close()
