"""Issue 18: the strategies against a real llama-server (built from the llama.cpp that
llama-cpp-python vendors, `scripts/serve_local.sh`) serving the tiny model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tts_tui.backends.openai import RemoteError
from tts_tui.search.protocol import SearchParams

pytestmark = [pytest.mark.model, pytest.mark.server, pytest.mark.timeout(1500)]  # the first builds the server
ROOT = Path(__file__).resolve().parents[1]
PROBLEM = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LOG = Path(tempfile.gettempdir()) / "tts-tui-llama-server.log"


def start(tiny_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(LOG, "ab")
    # its own process group: stopping it stops a build (cmake) or the server, not just bash
    proc = subprocess.Popen([str(ROOT / "scripts" / "serve_local.sh"), str(tiny_path), str(port), "-c", "8192"],
                            stdout=log, stderr=log, start_new_session=True,
                            env={**os.environ, "PYTHON": sys.executable})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 1200  # the first call builds llama-server (about 5 minutes on 2 cores)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with {proc.returncode} (see {LOG})")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if json.loads(r.read()).get("status") == "ok":
                    return proc, url
        except OSError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"llama-server did not come up (see {LOG})")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def server(tiny_path):
    proc, url = start(tiny_path)
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def solver(server):
    from tts_tui.session import RemoteSolver

    return RemoteSolver(server, "tiny", concurrency=4)


@pytest.mark.parametrize("strategy,n,m", [("cot", 1, 1), ("majority", 4, 1), ("weighted", 4, 1), ("beam", 4, 2),
                                           ("dvts", 4, 2), ("mcts", 4, 2), ("bracket", 4, 1), ("revise", 4, 2),
                                           ("keep-thinking", 1, 1), ("auto", 4, 2)])
def test_strategy_on_the_real_server(solver, strategy, n, m):
    params = SearchParams(n=n, m=m, budget=240, max_steps=3, step_tokens=48, seed=3)
    result, search = solver.solve(PROBLEM, strategy, params)
    assert 0 < result.tokens <= 240
    assert len(search.tree.nodes) > 1
    steps = [x for x in search.tree.nodes.values() if x.kind == "step" and x.tokens]
    # a stop string's own tokens are counted but come without logprobs
    assert steps and all(0 < len(x.logprobs) <= len(x.tokens) for x in steps)
    assert all(t >= 0 for x in steps for t in x.tokens)  # real token ids from the server


def test_beam_continuations_hit_the_prompt_cache(solver):
    before = dict(solver.generator.stats())
    solver.solve(PROBLEM, "beam", SearchParams(n=4, m=2, budget=240, max_steps=4, step_tokens=32, seed=1))
    after = solver.generator.stats()
    prompt = after["prompt_tokens"] - before["prompt_tokens"]
    cached = after["cached_tokens"] - before["cached_tokens"]
    assert prompt > 0 and cached / prompt > 0.5, (prompt, cached)  # the resent prefix is not prefilled again


def test_a_server_killed_mid_run_is_one_line_and_the_eval_keeps_its_rows(tiny_path, tmp_path):
    from tts_tui.backends.openai import OpenAIClient
    from tts_tui.evaluate import Problem, read_rows, run_eval
    from tts_tui.session import RemoteSolver

    proc, url = start(tiny_path)
    try:
        solver = RemoteSolver(url, "tiny", concurrency=2)
        solver.client = solver.generator.client = OpenAIClient(url, retries=1, backoff=0.0, timeout=10)
        problems = [Problem(f"q{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(1, 4)]
        calls = []

        def solve(problem, strategy, params):
            calls.append(problem)
            if len(calls) == 2:
                stop(proc)
            return solver.solve(problem, strategy, params)

        run_eval(problems, ["majority"], [2], SearchParams(m=1, max_steps=2, step_tokens=24), solve, tmp_path, 24)
        rows = read_rows(tmp_path / "log.jsonl")
        assert rows[0]["id"] == "q1" and not rows[0].get("failed")  # the finished row is kept
        assert all("Traceback" not in str(r.get("failed", "")) for r in rows)
        failed = [r for r in rows if r.get("failed")]
        assert failed and all("\n" not in r["failed"] for r in failed)
        with pytest.raises(RemoteError):
            solver.solve(PROBLEM, "cot", SearchParams(n=1, budget=32))
    finally:
        stop(proc)
