"""A real llama-server on 127.0.0.1 (`scripts/serve_local.sh`, built once from the llama.cpp
llama-cpp-python vendors), started and stopped for the tests, the server bench and the
fault matrix."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: str | Path, log: Path, *args: str, wait_s: float = 1200) -> tuple[subprocess.Popen, str]:
    """llama-server serving `model` (a catalog id or a GGUF path), once it answers /health;
    its own process group, so stopping it stops a build (cmake) or the server, not just bash."""
    port = free_port()
    with open(log, "ab") as out:  # the child keeps its own handle
        proc = subprocess.Popen([str(ROOT / "scripts" / "serve_local.sh"), str(model), str(port), *args],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHON": sys.executable})
    url = f"http://127.0.0.1:{port}"
    try:  # whatever breaks the wait (Ctrl-C too), the server does not outlive it
        deadline = time.monotonic() + wait_s  # the first call builds llama-server (about 5 minutes on 2 cores)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {proc.returncode} (see {log})")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if json.loads(r.read()).get("status") == "ok":
                        return proc, url
            except (OSError, ValueError, http.client.HTTPException):  # not up yet, or still loading
                pass
            time.sleep(0.5)
        raise RuntimeError(f"llama-server did not come up in {wait_s:.0f} s (see {log})")
    except BaseException:
        stop(proc)
        raise


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop the server's process group (safe to call twice, from two threads)."""
    if proc.poll() is None:
        _signal(proc, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL)
            proc.wait()


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass  # gone already (another caller stopped it)
