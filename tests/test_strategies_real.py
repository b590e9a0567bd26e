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
     ("dvts", "prm", 4, 2), ("keep-thinking", "confidence", 1, 1)],
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
