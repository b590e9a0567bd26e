"""Strategies end to end on the tiny real model (the engine, the judge and the PRM path)."""

from __future__ import annotations

import pytest

from tts_tui.search.protocol import SearchParams
from tts_tui.session import EngineOptions, Solver

pytestmark = pytest.mark.model
PROBLEM = "Tom has 3 apples and buys 4 more. How many apples does he have?"


@pytest.fixture(scope="module")
def solver(tiny_path):
    s = Solver(str(tiny_path), prm=str(tiny_path), options=EngineOptions(n_ctx=4096, n_seq_max=32))
    yield s
    s.close()


@pytest.mark.parametrize(
    "strategy,verifier,n,m",
    [("beam", "self-judge", 4, 2), ("revise", "confidence", 4, 2), ("bracket", "confidence", 4, 1),
     ("dvts", "prm", 4, 2), ("mcts", "confidence", 4, 2), ("keep-thinking", "confidence", 1, 1)],
)
def test_strategy_on_the_real_engine(solver, strategy, verifier, n, m):
    params = SearchParams(n=n, m=m, budget=240, max_steps=3, step_tokens=48, seed=3)
    result, search = solver.solve(PROBLEM, strategy, params, verifier)
    assert result.tokens <= 240
    assert len(search.tree.nodes) > 1
    assert solver.engine.free_sequences == solver.engine.n_seq_max  # nothing leaked
    if verifier != "confidence":
        scored = [n for n in search.tree.nodes.values() if verifier in n.scores]
        assert scored and all(0.0 <= n.scores[verifier] <= 1.0 for n in scored)
    if strategy == "bracket" and len(result.groups) > 1:
        assert any(n.kind == "match" for n in search.tree.nodes.values())


def test_one_real_dvts_run_gives_the_smaller_n_from_its_first_subtree(solver, tmp_path):
    from tts_tui.evaluate import Problem, run_eval

    def solve(problem, strategy, params):
        return solver.solve(problem, strategy, params, "confidence")

    base = SearchParams(m=2, max_steps=3, step_tokens=48, seed=3)
    rows = run_eval([Problem("p", PROBLEM, "7")], ["dvts"], [2, 4], base, solve, tmp_path, 60)
    by_n = {r["n"]: r for r in rows}
    assert (by_n[2]["subsampled_from"], by_n[4]["subsampled_from"]) == (4, None)
    assert 0 < by_n[2]["tokens"] < by_n[4]["tokens"] <= 240  # one subtree of the two, within the budget
    assert solver.engine.free_sequences == solver.engine.n_seq_max
