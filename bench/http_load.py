"""A light HTTP/1.1 load generator for the serving benchmarks: one kept-alive socket per client thread, requests
encoded once, responses read by Content-Length.

The benchmarks run the server and the load generator on the same cores, so every millisecond the generator spends
is taken from the server. httpx spends about 1 ms of CPU per request on this machine; this client spends a few
tens of microseconds, and ``load`` reports what it spent (``client_cpu_ms_per_request``) beside the figures.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from typing import Sequence
from urllib.parse import urlsplit


class BadResponse(Exception):
    """The server answered something this client cannot read as one HTTP/1.1 response."""


def encode_post(host: str, path: str, body: dict[str, object], key: str) -> bytes:
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
    return head.encode() + data


class Connection:
    """One kept-alive connection: ``request(raw)`` sends pre-encoded bytes and returns (status, body)."""

    def __init__(self, host: str, port: int, timeout: float = 120) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise BadResponse("connection closed by the server mid-response")
        self.buf += data

    def request(self, raw: bytes) -> tuple[int, bytes]:
        self.sock.sendall(raw)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
        lines = head.split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise BadResponse(f"bad status line {lines[0]!r}") from None
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if "content-length" not in headers:
            raise BadResponse(f"no Content-Length in a {status} response (chunked bodies are not read)")
        n = int(headers["content-length"])
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, body

    def close(self) -> None:
        self.sock.close()


def load(base: str, key: str, qs: Sequence[str], clients: int, path: str = "/v1/search",
         k: int = 10) -> dict[str, float]:
    """POST every query in ``qs`` once, from ``clients`` threads with one connection each: throughput, latency
    percentiles, non-200 answers counted as errors, and this process's CPU per request."""
    url = urlsplit(base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    work = [encode_post(f"{host}:{port}", path, {"query": q, "k": k}, key) for q in qs]
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal errors
        conn = Connection(host, port)
        try:
            while True:
                with lock:
                    if not work:
                        return
                    raw = work.pop()
                t = time.perf_counter()
                try:
                    status, _ = conn.request(raw)
                except (OSError, BadResponse):
                    status = 0
                    conn.close()
                    conn = Connection(host, port)
                ms = (time.perf_counter() - t) * 1000
                with lock:
                    lat.append(ms)
                    errors += status != 200
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0, c0 = time.perf_counter(), time.process_time()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    xs = sorted(lat)

    def pct(p: float) -> float:
        return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

    return {"clients": clients, "requests": len(qs), "errors": errors, "per_s": len(qs) / wall,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "mean_ms": statistics.mean(lat),
            "client_cpu_ms_per_request": 1000 * cpu / len(qs)}
