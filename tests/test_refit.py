"""Refitting auto's compute-optimal table from eval rows."""

from __future__ import annotations

import json

from fakes import FakeGenerator, FakeScorer
from tts_tui import paths
from tts_tui.evaluate import Problem, probe_agreement, run_eval
from tts_tui.refit import accuracy_by_bin, format_bins, refit
from tts_tui.search.protocol import SearchParams
from tts_tui.search.run import Search
from tts_tui.search.strategies import run_strategy
from tts_tui.search.strategies.auto import load_table
from tts_tui.verify.answers import MathAnswers


def row(pid, strategy, n, correct, tokens, **kw):
    return {"id": pid, "strategy": strategy, "n": n, "correct": correct, "tokens": tokens, **kw}


ROWS = [
    # p1, p2 easy (probes agree 4/4); p3 hard (1/4)
    row("p1", "majority", 8, True, 800, probe_agree=1.0), row("p2", "majority", 8, True, 900, probe_agree=0.75),
    row("p3", "majority", 8, False, 1000, probe_agree=0.0),
    row("p1", "beam", 8, True, 2000), row("p2", "beam", 8, True, 2100), row("p3", "beam", 8, True, 2500),
    row("p1", "majority", 4, True, 400), row("p2", "majority", 4, True, 450),  # p3 missing: not comparable on hard
    row("p1", "cot", 1, True, 100), row("p2", "cot", 1, True, 100), row("p3", "cot", 1, True, 100),
]


def test_probe_agreement_counts_equivalent_answers():
    samples = [{"answer": a} for a in ("42", "42.0", "\\frac{84}{2}", "7", "9")]
    assert probe_agreement(samples, probe=4) == 0.75
    assert probe_agreement([{"answer": None}] * 4, probe=4) == 0.0


def test_bins_compare_only_cells_that_ran_every_problem():
    acc = accuracy_by_bin(ROWS)
    assert set(acc) == {"easy", "hard"}
    assert ("majority", 4) in acc["easy"] and ("majority", 4) not in acc["hard"]
    assert acc["hard"][("beam", 8)]["accuracy"] == 1.0 and acc["hard"][("majority", 8)]["accuracy"] == 0.0
    assert "hard" in format_bins(ROWS)


def test_refit_picks_the_best_then_cheapest_per_bin_and_keeps_the_rest():
    table = {"probe": 4, "bins": {"easy": {"strategy": "weighted", "n_scale": 1.0},
                                  "medium": {"strategy": "weighted", "n_scale": 1.0},
                                  "hard": {"strategy": "majority", "n_scale": 1.0}}}
    new, lines = refit(ROWS, table, max_n=8)
    assert new["bins"]["easy"] == {"strategy": "majority", "n_scale": 0.5}  # ties: fewest tokens; CoT not choosable
    assert new["bins"]["hard"] == {"strategy": "beam", "n_scale": 1.0}
    assert new["bins"]["medium"] == table["bins"]["medium"]  # no evidence: unchanged
    assert len(lines) == 2


def test_eval_rows_carry_probe_agreement_and_auto_reads_a_user_table(tmp_path):
    def solve(problem, strategy, params):
        search = Search(FakeGenerator(), problem, params, MathAnswers(), FakeScorer())
        return run_strategy(strategy, search), search

    rows = run_eval([Problem("p0", "q", "42")], ["majority"], [4], SearchParams(m=1, max_steps=6), solve, tmp_path, 64)
    assert rows[0]["probe_agree"] == 0.75  # fake answers 42, 42, 41, 42
    user = paths.auto_table_path()
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text(json.dumps({"probe": 2, "bins": {"easy": {"strategy": "beam", "n_scale": 1}}}))
    assert load_table()["probe"] == 2
    user.write_text("{broken")
    assert load_table()["probe"] == 4  # a broken user table falls back to the default


def test_refit_can_choose_an_adaptive_vote_and_auto_then_draws_in_waves():
    rows = ROWS + [row("p1", "majority+adaptive", 8, True, 300), row("p2", "majority+adaptive+cut", 8, True, 250),
                   row("p2", "majority+adaptive", 8, True, 350), row("p1", "majority+adaptive+cut", 8, True, 260),
                   row("p1", "auto+adaptive", 8, True, 10), row("p2", "auto+adaptive", 8, True, 10)]
    table = {"probe": 4, "bins": {"easy": {"strategy": "weighted", "n_scale": 1.0}}}
    new, _ = refit(rows, table, max_n=8)
    assert new["bins"]["easy"] == {"strategy": "majority", "n_scale": 1.0, "adaptive": True, "cut": True}
    # auto with that table: a split easy bin (3 of 4 probes agree) goes on in waves, not to a fixed N
    user = paths.auto_table_path()
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text(json.dumps({"probe": 4, "bins": {**load_table()["bins"], "easy": new["bins"]["easy"]}}))
    gen = FakeGenerator(answers=("42", "42", "41", "42", "42", "42", "42", "42"))
    search = Search(gen, "q", SearchParams(n=16, budget=100_000), MathAnswers(), FakeScorer())
    result = run_strategy("auto", search)
    assert result.stats["difficulty"] == "easy" and result.stats["samples_used"] == 8  # 3:1, then 7:1 stops
    assert gen.calls == [4, 4]


def test_a_refit_notes_adaptive_rows_measured_with_another_first_wave():
    from tts_tui.refit import refit

    rows = [{"id": f"q{i}", "strategy": "majority+adaptive", "n": 8, "correct": True, "tokens": 100,
             "probe_agree": 1.0, "difficulty": "easy"} for i in range(3)]
    table = {"probe": 4, "bins": {"easy": {"strategy": "majority", "n_scale": 1.0}}}
    _, same = refit(rows, table, 8, {"wave": 4, "stop_at": 0.95})
    _, other = refit(rows, table, 8, {"wave": 2, "stop_at": 0.95})
    assert not any(x.startswith("note:") for x in same)
    assert any("waves of 2" in x for x in other)
