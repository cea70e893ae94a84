"""`medkb serve --workers N` really runs N worker processes (uvicorn with the app factory), each building its
settings from the environment the parent set, and each answering authenticated searches on the same database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from medkb.cli.serve import listening_socket, worker_environment
from medkb.settings import EmbeddingSettings, Settings
from tests.test_api_kb import auth, build_kb


def test_connections_to_the_shared_worker_socket_have_nagle_off() -> None:
    """With N workers the parent binds the socket (proto 0), so asyncio never set TCP_NODELAY on accepted
    connections and each response on a kept-alive connection waited ~60 ms for Nagle + delayed ACK
    (bench_cpu: 16.5 req/s at 1 client with 2 workers vs 73.6 with 1). The listener now carries it to them."""
    import uvicorn

    sock = listening_socket(uvicorn.Config("medkb.api.app:app_from_env", host="127.0.0.1", port=0))
    try:
        sock.listen()  # as each worker's asyncio server does
        client = socket.create_connection(sock.getsockname()[:2])
        accepted, _ = sock.accept()
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        accepted.close()
        client.close()
    finally:
        sock.close()


def test_worker_environment_shares_the_cores_and_carries_the_database() -> None:
    s = Settings().with_database("sqlite:////tmp/x.db")
    assert worker_environment(s, 2, 2) == {"MEDKB_DATABASE_URL": "sqlite:////tmp/x.db",
                                           "MEDKB_EMBEDDING_THREADS": "1"}
    assert worker_environment(s, 3, 8)["MEDKB_EMBEDDING_THREADS"] == "2"
    pinned = s.model_copy(update={"embedding": EmbeddingSettings(threads=4)})
    assert "MEDKB_EMBEDDING_THREADS" not in worker_environment(pinned, 2, 2)  # an explicit choice is kept


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_serve_workers_runs_that_many_processes_that_all_answer() -> None:
    kb = build_kb()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDKB_")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "medkb.cli.main", "--db", kb.settings.database.url, "serve", "--port", str(port),
         "--workers", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        ready = 0
        while time.monotonic() < deadline and ready < 4:  # several answers: both workers have loaded
            try:
                ready = ready + 1 if httpx.get(f"{base}/readyz", timeout=5).status_code == 200 else 0
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert ready, proc.stdout.read().decode()[-3000:] if proc.poll() is not None else "not ready in time"
        workers = [p for p in _children(proc.pid)
                   if "multiprocessing" in Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ")
                   and "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(workers) == 2, workers
        key = kb.keys["demo-clinician"]

        def search(i: int) -> int:
            r = httpx.post(f"{base}/v1/search", json={"query": f"multiple sclerosis infection {i}", "k": 3},
                           headers=auth(key), timeout=60)
            return r.status_code if r.status_code != 200 or r.json()["hits"] else -1

        with ThreadPoolExecutor(max_workers=4) as pool:
            assert set(pool.map(search, range(16))) == {200}
        assert httpx.post(f"{base}/v1/search", json={"query": "x"}, timeout=30).status_code == 401
        for p in workers:  # each worker has its own models: both grew well past an empty interpreter
            rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{p}/status").read_text().splitlines()
                          if line.startswith("VmRSS:"))
            assert rss_kb > 100_000
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
