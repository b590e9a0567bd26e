"""`tts eval` logic on the fake generator: subsampling, resumability, table and plot."""

from __future__ import annotations

import json

from fakes import FakeGenerator, FakeScorer
from tts_tui.evaluate import (Problem, format_table, load_problems, plan, plot_svg, read_rows, run_eval, summarize,
                              verifier_auroc, versus)
from tts_tui.search.protocol import SearchParams
from tts_tui.search.run import Search
from tts_tui.search.strategies import run_strategy
from tts_tui.verify.answers import MathAnswers

PROBLEMS = [Problem(f"p{i}", f"problem {i}", "42") for i in range(3)]


def solver(calls):
    def solve(problem, strategy, params):
        calls.append((strategy, params.n))
        search = Search(FakeGenerator(), problem, params, MathAnswers(), FakeScorer())
        return run_strategy(strategy, search), search
    return solve


def test_eval_subsamples_and_resumes(tmp_path):
    calls = []
    base = SearchParams(m=2, max_steps=6)
    rows = run_eval(PROBLEMS, ["cot", "majority", "weighted", "beam"], [2, 4], base, solver(calls), tmp_path, 64)
    # one sample run at N=4 serves majority and weighted at N=2 and 4; beam runs per N
    assert calls.count(("weighted", 4)) == 3
    assert ("majority", 2) not in calls
    assert calls.count(("beam", 2)) == 3 and calls.count(("beam", 4)) == 3
    assert len(rows) == 3 * (1 + 2 + 2 + 2)
    # the full-N row keeps every sample, so another vote can be computed from the log alone
    full = [r for r in rows if r["strategy"] == "majority" and r["n"] == 4]
    assert all(len(r["samples"]) == 4 and r["answer"] in [a for a, _ in r["samples"]] for r in full)
    assert not any("samples" in r for r in rows if r["n"] == 2)
    again = []
    run_eval(PROBLEMS, ["cot", "majority", "weighted", "beam"], [2, 4], base, solver(again), tmp_path, 64)
    assert again == []  # nothing redone


def test_bracket_carries_the_sampled_strategies(tmp_path):
    """Bracket draws the same N samples first, so its run yields majority/weighted at every N."""
    calls = []
    base = SearchParams(m=2, max_steps=6)
    rows = run_eval(PROBLEMS, ["majority", "weighted", "bracket"], [2, 4], base, solver(calls), tmp_path / "b", 64)
    assert calls.count(("bracket", 4)) == 3 and calls.count(("bracket", 2)) == 3
    assert ("weighted", 4) not in calls
    alone = run_eval(PROBLEMS, ["majority", "weighted"], [2, 4], base, solver([]), tmp_path / "w", 64)
    pick = lambda rs: sorted((r["key"], r["answer"], r["tokens"]) for r in rs if r["strategy"] != "bracket")
    assert pick(rows) == pick(alone)  # same candidates, same votes, same token counts
    assert sum(r["strategy"] == "bracket" for r in rows) == 6
    again = []
    run_eval(PROBLEMS, ["majority", "weighted", "bracket"], [2, 4], base, solver(again), tmp_path / "b", 64)
    assert again == []


def test_dvts_at_the_largest_n_gives_the_smaller_ns_from_its_first_subtrees(tmp_path):
    calls = []
    base = SearchParams(m=2, max_steps=6)
    rows = run_eval(PROBLEMS, ["dvts"], [2, 4, 8], base, solver(calls), tmp_path / "all", 64)
    assert calls == [("dvts", 8)] * 3  # one run per problem serves N=2, 4 and 8
    assert sorted((r["n"], r["subsampled_from"]) for r in rows if r["id"] == "p0") == [(2, 8), (4, 8), (8, None)]
    # the fake's subtrees are the same branches whatever N is, so a real N=4 run must match
    alone = run_eval(PROBLEMS, ["dvts"], [4], base, solver([]), tmp_path / "n4", 64)
    pick = lambda rs: sorted((r["id"], r["answer"], r["tokens"]) for r in rs if r["n"] == 4)
    assert pick(rows) == pick(alone)
    full = [r for r in rows if r["n"] == 8]
    assert all(r["tokens"] > s["tokens"] for r in full for s in rows if s["id"] == r["id"] and s["n"] < 8)


def test_plan_runs_dvts_alone_where_m_does_not_divide_n():
    jobs = plan(["dvts"], [2, 4, 8], m=4)
    assert jobs == [("dvts", 2, [2], ["dvts"]), ("dvts", 8, [4, 8], ["dvts"])]


def test_eval_survives_a_cut_line(tmp_path):
    calls = []
    run_eval(PROBLEMS[:1], ["cot"], [1], SearchParams(), solver(calls), tmp_path, 64)
    with open(tmp_path / "log.jsonl", "a") as fh:
        fh.write('{"key": "cot|1|p1", "trunc')  # killed mid-write
    run_eval(PROBLEMS[:2], ["cot"], [1], SearchParams(), solver(calls), tmp_path, 64)
    assert len(calls) == 2
    rows = read_rows(tmp_path / "log.jsonl")
    assert {r["id"] for r in rows} == {"p0", "p1"}


def test_table_and_plot(tmp_path):
    rows = run_eval(PROBLEMS, ["cot", "majority"], [1, 4], SearchParams(m=1), solver([]), tmp_path, 64)
    table = summarize(rows)
    text = format_table(table)
    assert "majority" in text and "accuracy" in text
    assert all(t["accuracy"] == 1.0 for t in table)
    plot_svg(table, tmp_path / "plot.svg")
    assert (tmp_path / "plot.svg").read_text().startswith("<svg")
    json.dumps(table)


def test_revise_rows_log_chains_and_right_to_wrong(tmp_path):
    def solve(problem, strategy, params):
        search = Search(FakeGenerator(answers=("42", "41")), problem, params, MathAnswers(), FakeScorer())
        return run_strategy(strategy, search), search

    rows = run_eval(PROBLEMS[:1], ["revise"], [4], SearchParams(m=4, max_steps=6), solve, tmp_path, 64)
    (row,) = rows
    (chain,) = row["chains"]  # N=4, M=4: one chain of four attempts
    assert len(chain) == 4
    assert row["attempt_tokens"] == [[15, 15, 15, 15]]  # the fake: three steps of five tokens
    flips = sum(1 for a, b in zip(chain, chain[1:]) if a == "42" and b != "42")
    assert flips >= 1 and row["right_to_wrong"] == flips


def test_plan_runs_the_cheap_single_chains_first_and_samples_once():
    jobs = plan(["majority", "cot", "weighted", "beam"], [4, 8])
    assert jobs[0] == ("cot", 1, [1], ["cot"])  # a run cut short still has its baseline
    assert jobs[1] == ("weighted", 8, [4, 8], ["majority", "weighted"])
    assert [j[:2] for j in jobs[2:]] == [("beam", 4), ("beam", 8)]


def test_verifier_auroc_ranks_right_samples_against_wrong_ones():
    rows = [{"gold": "42", "samples": [["42", 0.9], ["41", 0.8], [None, 0.0], ["42.0", 0.7]]},
            {"gold": "7", "samples": [["7", 0.6], ["8", 0.6]]}]
    auc, right, wrong = verifier_auroc(rows)
    # right 0.9, 0.7, 0.6 against wrong 0.8, 0.6: 0.9 beats both, 0.7 beats 0.6, 0.6 ties 0.6
    assert (right, wrong) == (3, 2) and auc == (3 + 0.5) / 6
    assert verifier_auroc([{"gold": "1", "samples": [["1", 0.5]]}]) is None  # nothing wrong to rank against


def test_versus_compares_on_shared_problems_only_and_names_gains_and_losses():
    cot = [{"id": "a", "correct": True}, {"id": "b", "correct": False}, {"id": "c", "correct": True},
           {"id": "d", "correct": False}]
    votes = [{"id": "a", "correct": False}, {"id": "b", "correct": True}, {"id": "c", "correct": True},
             {"id": "e", "correct": True}]  # e: CoT never ran it, so it does not count
    v = versus(votes, cot)
    assert (v["shared"], v["right"], v["baseline_right"]) == (3, 2, 2)
    assert (v["gained"], v["lost"]) == (["b"], ["a"])


def test_load_problems_skips_a_tuned_slice_after_the_level_filter(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"p{i}", "answer": str(i), "level": i % 2 + 1}) + "\n"
                            for i in range(10)), encoding="utf-8")
    held_out = load_problems(data, limit=2, levels={1}, skip=2)
    assert [p.id for p in held_out] == ["q4", "q6"]  # level 1 is q0, q2, q4, q6, q8
    assert [p.id for p in load_problems(data, skip=8)] == ["q8", "q9"]
