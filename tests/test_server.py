"""Issue 18: the strategies against a real llama-server (built from the llama.cpp that
llama-cpp-python vendors, `scripts/serve_local.sh`) serving the tiny model."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

import llama_server
from llama_server import stop
from tts_tui.backends.openai import RemoteError
from tts_tui.search.protocol import SearchParams

pytestmark = [pytest.mark.model, pytest.mark.server, pytest.mark.timeout(1500)]  # the first builds the server
ROOT = Path(__file__).resolve().parents[1]
PROBLEM = "Tom has 3 apples and buys 4 more. How many apples does he have?"


LOG = Path(tempfile.gettempdir()) / "tts-tui-llama-server.log"


def start(tiny_path: Path) -> tuple[subprocess.Popen, str]:
    return llama_server.start(tiny_path, LOG, "-c", "8192")


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
    """Each step resends the whole prefix; with the server's prompt cache it evaluates a
    fraction of what it evaluates with the cache off, for the same search."""
    params = SearchParams(n=4, m=2, budget=240, max_steps=4, step_tokens=32, seed=1)
    evaluated = {}
    for cache in (True, False):
        solver.generator.cache_prompt = cache
        try:
            result, _ = solver.solve(PROBLEM, "beam", params)
        finally:
            solver.generator.cache_prompt = True
        evaluated[cache] = result.stats["prompt_tokens"] - result.stats["cached_tokens"]
    assert 0 < evaluated[True] < 0.5 * evaluated[False], evaluated


def test_a_server_killed_mid_run_is_one_line_and_a_resume_finishes_the_eval(tiny_path, tmp_path):
    from tts_tui.backends.openai import OpenAIClient
    from tts_tui.evaluate import Problem, read_rows, run_eval
    from tts_tui.session import RemoteSolver

    problems = [Problem(f"q{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(1, 4)]
    params = SearchParams(m=1, max_steps=2, step_tokens=24)

    def solver_at(url: str) -> RemoteSolver:
        solver = RemoteSolver(url, "tiny", concurrency=2)
        solver.client = solver.generator.client = OpenAIClient(url, retries=1, backoff=0.0, timeout=10)
        return solver

    proc, url = start(tiny_path)
    try:
        solver = solver_at(url)
        calls = []

        def solve(problem, strategy, params):
            calls.append(problem)
            if len(calls) == 2:  # killed outright, most likely with this problem's requests in flight
                threading.Timer(0.3, stop, (proc, signal.SIGKILL)).start()
            if len(calls) == 3:  # dead by now whatever the timing (stop does nothing twice)
                stop(proc, signal.SIGKILL)
            return solver.solve(problem, strategy, params)

        run_eval(problems, ["majority"], [2], params, solve, tmp_path, 24)
        rows = read_rows(tmp_path / "log.jsonl")
        assert rows[0]["id"] == "q1" and not rows[0].get("failed")  # the finished row is kept
        failed = [r for r in rows if r.get("failed")]
        assert failed and all(r.get("transient") and "\n" not in r["failed"] and "Traceback" not in r["failed"]
                              for r in failed)
        with pytest.raises(RemoteError):
            solver.solve(PROBLEM, "cot", SearchParams(n=1, budget=32))
    finally:
        stop(proc)
    proc, url = start(tiny_path)  # the server back (another port): the resume runs the failed rows again
    try:
        again = solver_at(url)
        run_eval(problems, ["majority"], [2], params, lambda p, st, q: again.solve(p, st, q), tmp_path, 24)
        rows = read_rows(tmp_path / "log.jsonl")
        assert sorted(r["id"] for r in rows) == ["q1", "q2", "q3"] and not any(r.get("failed") for r in rows)
    finally:
        stop(proc)
