"""`tts eval` logic on the fake generator: subsampling, resumability, table and plot."""

from __future__ import annotations

import json

import pytest

from fakes import FakeGenerator, FakeScorer
from tts_tui.evaluate import (EvalStopped, Problem, format_table, load_problems, plan, plot_svg, read_rows,
                              run_eval, summarize, verifier_auroc, versus)
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
    assert all(len(r["samples"]) == 4 and r["answer"] in [s[0] for s in r["samples"]] for r in full)
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


# -- issue 15: figures that carry their settings; failed problems; honest compute ---------------
SETTINGS = {"model": "tiny", "model_sha256": "ab" * 32, "temperature": 0.3, "budget_per_sample": 512, "m": 4,
            "verifier": "confidence", "auto_table": "t1"}


def test_a_resume_with_other_settings_is_refused_naming_what_differs(tmp_path):
    import pytest

    from tts_tui.evaluate import SettingsMismatch, open_settings

    first = open_settings(tmp_path, SETTINGS, ["cot"])
    assert open_settings(tmp_path, dict(SETTINGS), ["cot"]) == first  # the same settings resume
    other = {**SETTINGS, "temperature": 0.7, "budget_per_sample": 1024}
    with pytest.raises(SettingsMismatch) as err:
        open_settings(tmp_path, other, ["cot"])
    msg = str(err.value)
    assert "\n" not in msg and "temperature: 0.3 -> 0.7" in msg and "budget_per_sample: 512 -> 1024" in msg
    assert "--allow-settings-change" in msg and "model" not in msg.split("(")[1].split(")")[0]
    second = open_settings(tmp_path, other, ["cot"], allow_change=True, code="0.1.0+gabc")
    doc = json.loads((tmp_path / "settings.json").read_text())
    assert doc["current"] == second != first
    assert doc["settings"][first]["settings"] == SETTINGS and doc["settings"][second]["code"] == "0.1.0+gabc"


def test_the_auto_table_is_compared_only_when_auto_runs(tmp_path):
    import pytest

    from tts_tui.evaluate import SettingsMismatch, open_settings

    first = open_settings(tmp_path, SETTINGS, ["cot", "majority"])
    refitted = {**SETTINGS, "auto_table": "t2"}
    # a refitted table does not lock a directory without auto, nor becomes its table
    assert open_settings(tmp_path, refitted, ["cot"]) == first
    with pytest.raises(SettingsMismatch, match="auto_table: t1 -> t2"):
        open_settings(tmp_path, refitted, ["auto"])
    assert open_settings(tmp_path, SETTINGS, ["auto"]) == first


def test_a_directory_from_before_settings_takes_them_with_a_note(tmp_path):
    from tts_tui.evaluate import open_settings

    (tmp_path / "log.jsonl").write_text(json.dumps({"key": "cot|1|p0", "id": "p0", "strategy": "cot", "n": 1,
                                                    "correct": True, "tokens": 10, "seconds": 1.0}) + "\n")
    notes = []
    digest = open_settings(tmp_path, SETTINGS, ["cot"], note=notes.append)
    assert len(notes) == 1 and "1 rows from before settings" in notes[0]
    assert json.loads((tmp_path / "settings.json").read_text())["current"] == digest


def test_every_row_records_the_settings_digest_and_code(tmp_path):
    stamp = {"settings_digest": "0123456789ab", "code": "0.1.0+gdeadbeef"}
    rows = run_eval(PROBLEMS[:1], ["cot", "majority"], [2], SearchParams(m=2), solver([]), tmp_path, 64, stamp=stamp)
    assert len(rows) == 2 and all(r["settings_digest"] == "0123456789ab" and r["code"] == stamp["code"] for r in rows)


def test_an_m_that_does_not_divide_n_is_an_error_before_anything_runs(tmp_path):
    import pytest

    from tts_tui.errors import InputError

    calls = []
    with pytest.raises(InputError, match="beam at N=6: M \\(4\\) must divide N"):
        run_eval(PROBLEMS, ["cot", "beam"], [4, 6], SearchParams(m=4), solver(calls), tmp_path, 64)
    with pytest.raises(InputError, match="dvts at N=2"):  # M larger than N was clamped silently too
        run_eval(PROBLEMS, ["dvts"], [2, 8], SearchParams(m=4), solver(calls), tmp_path, 64)
    assert calls == [] and not (tmp_path / "log.jsonl").exists()


def test_a_failing_problem_is_a_failed_row_and_the_run_goes_on(tmp_path):
    from tts_tui.errors import ModelError

    calls = []
    ok = solver(calls)
    broken = {"p1"}

    def solve(problem, strategy, params):
        if problem == "problem 1" and "p1" in broken:
            calls.append((strategy, params.n))
            raise ModelError("the KV cache is full (8192 tokens): lower N or the budget")
        return ok(problem, strategy, params)

    rows = run_eval(PROBLEMS, ["cot", "majority"], [2], SearchParams(m=2), solve, tmp_path, 64)
    assert len(rows) == 3 * 2  # the problem after the failure ran
    failed = [r for r in rows if r.get("failed")]
    assert {(r["id"], r["strategy"]) for r in failed} == {("p1", "cot"), ("p1", "majority")}
    assert all(r["failed"].startswith("ModelError: the KV cache is full") and r["correct"] is False for r in failed)
    (cot,) = [t for t in summarize(rows) if t["strategy"] == "cot"]
    assert (cot["problems"], cot["failed"], round(cot["accuracy"], 3)) == (3, 1, 0.667)  # counted wrong
    assert "failed" in format_table(summarize(rows))
    calls.clear()
    run_eval(PROBLEMS, ["cot", "majority"], [2], SearchParams(m=2), solve, tmp_path, 64)
    assert calls == []  # a resume does not redo a failure: the same settings fail the same way
    broken.clear()  # fixed
    rows = run_eval(PROBLEMS, ["cot", "majority"], [2], SearchParams(m=2), solve, tmp_path, 64, retry_failed=True)
    assert calls == [("cot", 1), ("weighted", 2)]
    assert len(rows) == 6 and not any(r.get("failed") for r in rows)  # the retry's rows replace the failed ones
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 8  # the log keeps the history


def test_rows_count_prefill_tokens_apart_from_generated_ones(tmp_path):
    """The token column is what was generated; prompts, judge and verifier inputs are a
    second column, so a strategy that pays a judge does not look cheaper than it is."""
    counter = {"generated": 0, "prefill": 0}
    inner = solver([])

    def solve(problem, strategy, params):
        result, search = inner(problem, strategy, params)
        judge = 30 if strategy == "bracket" else 0
        result.stats["judge_prompt_tokens"] = judge
        counter["generated"] += result.tokens
        counter["prefill"] += 50 + judge  # the problem's prompt, and the judge's prompts
        return result, search

    rows = run_eval(PROBLEMS[:1], ["cot", "majority", "bracket"], [4], SearchParams(m=2), solve, tmp_path, 64,
                    meter=lambda: dict(counter))
    by = {r["strategy"]: r for r in rows}
    assert by["cot"]["prefill_tokens"] == 50
    assert by["bracket"]["prefill_tokens"] == 80
    assert by["majority"]["prefill_tokens"] == 50  # the votes read the samples without the judge
    table = summarize(rows)
    assert {t["strategy"]: t["mean_prefill"] for t in table} == {"bracket": 80, "cot": 50, "majority": 50}
    assert "prefill" in format_table(table).splitlines()[0]


def test_old_rows_without_the_new_fields_still_make_a_table(tmp_path):
    old = [{"key": f"cot|1|p{i}", "id": f"p{i}", "strategy": "cot", "n": 1, "gold": "1", "answer": "1",
            "correct": True, "tokens": 100, "seconds": 2.0} for i in range(2)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    (t,) = summarize(read_rows(tmp_path / "log.jsonl"))
    assert t["mean_prefill"] is None and t["failed"] == 0
    line = format_table([t]).splitlines()[1].split()
    assert line[:7] == ["cot", "1", "2", "100.0%", "0", "100", "-"]


def test_dvts_rows_read_from_a_larger_run_are_marked_as_derived(tmp_path):
    rows = run_eval(PROBLEMS, ["dvts", "majority"], [2, 4], SearchParams(m=2, max_steps=6), solver([]), tmp_path, 64)
    table = {(t["strategy"], t["n"]): t for t in summarize(rows)}
    assert table[("dvts", 2)]["derived_from"] == "N=4*"  # its subtrees shared the N=4 run's budget
    assert table[("dvts", 4)]["derived_from"] == ""
    assert table[("majority", 2)]["derived_from"] == "N=4"  # independent samples: the same as a run
    text = format_table(list(table.values()))
    assert "N=4*" in text and "shared its budget" in text


# -- review of issue 15: settings changes rerun, prefill of derived rows, systemic failures ----
def stamped(tmp_path, settings, strategies, **kw):
    """What `tts eval` does before running: record the settings, stamp rows with them, and
    count as done only the rows made with them."""
    from tts_tui.evaluate import current_filter, open_settings

    digest = open_settings(tmp_path, settings, strategies, **kw)
    return {"stamp": {"settings_digest": digest}, "is_current": current_filter(tmp_path)}


def test_allow_settings_change_reruns_the_rows_made_with_other_settings(tmp_path):
    first = stamped(tmp_path, SETTINGS, ["cot", "majority"])
    run_eval(PROBLEMS, ["cot", "majority"], [2], SearchParams(m=2), solver([]), tmp_path, 64, **first)
    other = {**SETTINGS, "temperature": 0.7}
    second = stamped(tmp_path, other, ["cot", "majority"], allow_change=True)
    calls = []
    rows = run_eval(PROBLEMS, ["cot", "majority"], [2], SearchParams(m=2), solver(calls), tmp_path, 64, **second)
    assert calls == [("cot", 1)] * 3 + [("weighted", 2)] * 3  # nothing counts as done
    new = second["stamp"]["settings_digest"]
    assert len(rows) == 6 and all(r["settings_digest"] == new for r in rows)  # the tables read the new rows
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 12  # the old ones stay in the log
    again = []
    run_eval(PROBLEMS, ["cot", "majority"], [2], SearchParams(m=2), solver(again), tmp_path, 64, **second)
    assert again == []
    # back to the first settings: the latest rows are the second's, so the first's are run again
    back = stamped(tmp_path, SETTINGS, ["cot"], allow_change=True)
    run_eval(PROBLEMS, ["cot"], [1], SearchParams(m=2), solver(again), tmp_path, 64, **back)
    assert again == [("cot", 1)] * 3


def test_the_verifier_is_compared_only_when_a_strategy_that_scores_runs(tmp_path):
    import pytest

    from tts_tui.evaluate import SettingsMismatch, open_settings

    first = open_settings(tmp_path, {**SETTINGS, "verifier": "probe", "probe_sha256": "p1"}, ["cot"])
    # CoT and keep-thinking score nothing: another verifier (or probe file) is no change for them
    assert open_settings(tmp_path, SETTINGS, ["cot", "keep-thinking"]) == first
    with pytest.raises(SettingsMismatch, match="verifier: probe -> confidence"):
        open_settings(tmp_path, SETTINGS, ["cot", "weighted"])


def test_m_is_compared_only_when_a_strategy_that_uses_it_runs(tmp_path):
    import pytest

    from tts_tui.evaluate import SettingsMismatch

    base = {**SETTINGS, "m": 2, "n_seq_max": 64}
    first = stamped(tmp_path, base, ["cot", "beam"])
    run_eval(PROBLEMS, ["cot", "beam"], [2], SearchParams(m=2), solver([]), tmp_path, 64, **first)
    # CoT runs with M=1 and one sequence whatever --m says: another M or sequence count is no change for it
    cot_only = stamped(tmp_path, {**base, "m": 4, "n_seq_max": 8}, ["cot"])
    assert cot_only["stamp"] == first["stamp"]  # and the M no beam row was made with does not become current
    calls = []
    run_eval(PROBLEMS, ["cot"], [1], SearchParams(m=4), solver(calls), tmp_path, 64, **cot_only)
    assert calls == []
    with pytest.raises(SettingsMismatch, match="m: 2 -> 4") as err:
        stamped(tmp_path, {**base, "m": 4}, ["cot", "beam"])
    assert "n_seq_max" not in str(err.value)
    changed = stamped(tmp_path, {**base, "m": 4}, ["cot", "beam"], allow_change=True)
    run_eval(PROBLEMS, ["cot", "beam"], [4], SearchParams(m=4), solver(calls), tmp_path, 64, **changed)
    assert calls == [("beam", 4)] * 3  # the CoT rows stay current: M is not theirs


def test_unstamped_rows_count_only_with_the_settings_that_took_them_over(tmp_path):
    from tts_tui.evaluate import done_keys

    old = [{"key": f"cot|1|p{i}", "id": f"p{i}", "strategy": "cot", "n": 1, "gold": "42", "answer": "42",
            "correct": True, "tokens": 10, "seconds": 1.0} for i in range(3)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    taken = stamped(tmp_path, SETTINGS, ["cot"], note=lambda _: None)
    assert json.loads((tmp_path / "settings.json").read_text())["legacy"] == taken["stamp"]["settings_digest"]
    calls = []
    run_eval(PROBLEMS, ["cot"], [1], SearchParams(), solver(calls), tmp_path, 64, **taken)
    assert calls == []  # as before digests: the directory took the settings over
    other = stamped(tmp_path, {**SETTINGS, "temperature": 0.7}, ["cot"], allow_change=True)
    assert done_keys(tmp_path / "log.jsonl", is_current=other["is_current"]) == set()


def test_eval_table_leaves_out_rows_made_with_other_settings(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    first = stamped(tmp_path, SETTINGS, ["cot"])
    run_eval(PROBLEMS, ["cot"], [1], SearchParams(), solver([]), tmp_path, 64, **first)
    second = stamped(tmp_path, {**SETTINGS, "temperature": 0.7}, ["cot"], allow_change=True)
    run_eval(PROBLEMS[:1], ["cot"], [1], SearchParams(), solver([]), tmp_path, 64, **second)  # cut short
    script = Path(__file__).resolve().parent.parent / "scripts" / "eval_table.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "log.jsonl")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (row,) = [x for x in proc.stdout.splitlines() if x.startswith("| cot")]
    assert row.split("|")[3].strip() == "1"  # one problem made with the current settings, not three mixed
    assert "2 rows made with other settings left out" in proc.stderr


def test_rows_are_stamped_with_the_libraries_that_decide_their_numbers():
    import importlib.metadata

    from tts_tui.evaluate import library_versions

    found = library_versions()
    assert found["llama_cpp_python"] == importlib.metadata.version("llama-cpp-python")
    assert found["math_verify"] == importlib.metadata.version("math-verify")


PROMPT, JUDGE, VERIFY = 50, 30, 7


def metered_solver(phases, counts):
    """The fake with engine-like prefill: a PROMPT-token prompt decoded once per problem,
    one fork token per branch, JUDGE tokens per judged pair, VERIFY per scored node;
    wrapped as `tts eval` wraps the real generator and scorer."""
    from fakes import FakeGenerator, FakeScorer

    class Generator(FakeGenerator):
        def root(self, problem, system=None):
            counts["prefill"] += PROMPT
            return super().root(problem, system)

        def expand(self, requests, **kw):
            counts["prefill"] += len(requests)
            return super().expand(requests, **kw)

        def compare(self, problem, pairs):
            counts["prefill"] += JUDGE * len(pairs)
            return super().compare(problem, pairs)

    class Scorer(FakeScorer):
        def score(self, search, nodes):
            counts["prefill"] += VERIFY * len(nodes)
            return super().score(search, nodes)

    def solve(problem, strategy, params):
        gen = phases.wrap(Generator(), {"root": "prompt", "compare": "judge"})
        search = Search(gen, problem, params, MathAnswers(), phases.wrap(Scorer(), {"score": "verifier"}))
        result = run_strategy(strategy, search)
        counts["generated"] += result.tokens
        return result, search

    return solve


def metered_eval(tmp_path, strategies, ns, m=1):
    from tts_tui.evaluate import PhaseMeter

    counts = {"generated": 0, "prefill": 0}
    phases = PhaseMeter(lambda: counts["prefill"])
    rows = run_eval(PROBLEMS[:1], strategies, ns, SearchParams(m=m, max_steps=6), metered_solver(phases, counts),
                    tmp_path, 64, meter=lambda: {**counts, **phases.totals})
    return {(r["strategy"], r["n"]): r for r in rows}


def test_a_vote_read_from_the_first_samples_pays_the_whole_prompt_and_majority_no_verifier(tmp_path):
    by = metered_eval(tmp_path, ["cot", "majority", "weighted"], [1, 4])
    assert by[("cot", 1)]["prefill_tokens"] == PROMPT + 1
    # one weighted run of 4 equal samples: the prompt once, 4 forks, 4 scored samples
    assert by[("weighted", 4)]["prefill_tokens"] == PROMPT + 4 + 4 * VERIFY
    assert by[("weighted", 4)]["verifier_prefill_tokens"] == 4 * VERIFY
    assert by[("majority", 4)]["prefill_tokens"] == PROMPT + 4  # majority never asks the verifier
    assert by[("majority", 4)]["verifier_prefill_tokens"] == 0
    # N=1 read from it: the whole prompt (as CoT@1 pays it), one sample's fork and score
    assert by[("majority", 1)]["prefill_tokens"] == PROMPT + 1 == by[("cot", 1)]["prefill_tokens"]
    assert by[("weighted", 1)]["prefill_tokens"] == PROMPT + 1 + VERIFY
    assert by[("weighted", 1)]["verifier_prefill_tokens"] == VERIFY


def test_a_bracket_carrier_charges_its_judge_to_bracket_alone(tmp_path):
    by = metered_eval(tmp_path, ["majority", "weighted", "bracket"], [2, 4])
    bracket = by[("bracket", 4)]["prefill_tokens"]
    assert bracket == PROMPT + 4 + 4 * VERIFY + JUDGE  # 42 x3 against 41: one pair judged
    assert by[("weighted", 4)]["prefill_tokens"] == PROMPT + 4 + 4 * VERIFY
    assert by[("majority", 4)]["prefill_tokens"] == PROMPT + 4
    assert by[("majority", 2)]["prefill_tokens"] == PROMPT + 2


def test_dvts_read_from_its_first_subtrees_pays_the_whole_prompt(tmp_path):
    by = metered_eval(tmp_path, ["dvts"], [2, 4], m=2)
    full, half = by[("dvts", 4)], by[("dvts", 2)]
    own = full["prefill_tokens"] - PROMPT  # forks and verifier inputs of both subtrees
    assert half["prefill_tokens"] == PROMPT + round(own * half["tokens"] / full["tokens"])
    assert half["prefill_tokens"] > PROMPT and half["verifier_prefill_tokens"] < full["verifier_prefill_tokens"]


def test_a_phase_inside_another_is_counted_once():
    from tts_tui.evaluate import PhaseMeter

    counts = {"prefill": 0}
    phases = PhaseMeter(lambda: counts["prefill"])

    def inner():
        counts["prefill"] += 5

    def outer():
        counts["prefill"] += 10
        phases.call("verifier", inner)

    phases.call("judge", outer)
    assert phases.totals == {"prompt": 0, "judge": 15, "verifier": 0}


def test_problems_failing_in_a_row_stop_the_evaluation_with_one_line(tmp_path):
    import pytest

    from tts_tui.errors import EXIT_BAD_INPUT
    from tts_tui.evaluate import MAX_FAILED_IN_A_ROW, EvalStopped

    problems = [Problem(f"p{i}", f"problem {i}", "42") for i in range(6)]
    calls = []

    def dead(problem, strategy, params):
        calls.append(problem)
        raise RuntimeError("CUDA error: out of memory\n  current device: 0")

    with pytest.raises(EvalStopped) as err:
        run_eval(problems, ["cot", "majority"], [2], SearchParams(m=2), dead, tmp_path, 64)
    msg = str(err.value)
    assert len(calls) == MAX_FAILED_IN_A_ROW == 3  # not the other three problems, nor majority
    assert "\n" not in msg and "3 problems in a row failed" in msg
    assert "each with RuntimeError: CUDA error: out of memory current device: 0" in msg and "--retry-failed" in msg
    assert err.value.exit_code not in (0, EXIT_BAD_INPUT)
    logged = read_rows(tmp_path / "log.jsonl")
    assert sorted(r["id"] for r in logged if r["failed"]) == ["p0", "p1", "p2"]  # kept, for --retry-failed
    calls.clear()
    rows = run_eval(problems, ["cot", "majority"], [2], SearchParams(m=2), solver(calls), tmp_path, 64,
                    retry_failed=True)
    assert len(rows) == 12 and not any(r.get("failed") for r in rows)


def test_a_success_between_failures_keeps_the_evaluation_going(tmp_path):
    problems = [Problem(f"p{i}", f"problem {i}", "42") for i in range(6)]
    ok = solver([])

    def flaky(problem, strategy, params):
        if problem in ("problem 0", "problem 1", "problem 3", "problem 4"):  # two in a row, twice
            raise ValueError("bad problem")
        return ok(problem, strategy, params)

    rows = run_eval(problems, ["cot"], [1], SearchParams(), flaky, tmp_path, 64)
    assert sum(bool(r.get("failed")) for r in rows) == 4 and len(rows) == 6


def test_a_problem_whose_rows_fail_to_read_is_a_failed_row(tmp_path):
    # Reading a run's rows scores and votes (the verifier may raise there too).
    calls = []
    ok = solver(calls)

    class BrokenScorer:
        name = "broken"

        def score(self, search, nodes):
            raise RuntimeError("the verifier fell over")

    def solve(problem, strategy, params):
        result, search = ok(problem, strategy, params)
        search.scorer = BrokenScorer()
        for n in search.tree.nodes.values():
            n.scores.clear()
        return result, search

    with pytest.raises(EvalStopped):  # three in a row: the evaluation stops, rows kept
        run_eval(PROBLEMS, ["weighted"], [2], SearchParams(m=2), solve, tmp_path, 64)
    rows = read_rows(tmp_path / "log.jsonl")
    assert len(rows) == 3 and all(r["failed"].startswith("RuntimeError: the verifier") for r in rows)


def test_a_stop_under_concurrency_logs_the_jobs_in_flight_and_starts_no_more(tmp_path):
    import threading
    import time

    import pytest

    from tts_tui.evaluate import EvalStopped

    problems = [Problem(f"p{i}", f"problem {i}", "42") for i in range(12)]
    ok = solver([])
    three_logged = threading.Event()
    started, logged = [], []

    def on_row(row):
        logged.append(row)
        if sum(1 for r in logged if r.get("failed")) >= 3:
            three_logged.set()
        time.sleep(0.1)  # a slow reader: jobs must wait for it, not start while it reads

    def solve(problem, strategy, params):
        started.append(problem)
        if problem == "problem 0":  # in flight when the stop comes: it ends after it
            assert three_logged.wait(10)
            return ok(problem, strategy, params)
        time.sleep(0.05)
        raise RuntimeError("server fell over")

    with pytest.raises(EvalStopped):
        run_eval(problems, ["cot"], [1], SearchParams(), solve, tmp_path, 64, on_row, concurrency=4)
    rows = read_rows(tmp_path / "log.jsonl")
    assert any(r["id"] == "p0" and r["correct"] for r in rows)  # finished work is kept
    assert len(rows) == len(started)  # every job that ran is logged
    # 4 at first, then one per row read before the stop (two failures): none after it
    assert len(started) <= 4 + 2, started


def test_a_failure_outside_the_problem_is_run_again_on_resume(tmp_path):
    from tts_tui.errors import TTSError

    problems = [Problem(f"p{i}", f"problem {i}", "42") for i in range(3)]
    calls = []
    ok = solver(calls)

    def down(problem, strategy, params):
        if problem == "problem 1":
            err = TTSError("http://127.0.0.1:8080/v1/completions: no usable answer after 5 tries (ConnectionRefusedError)")
            err.transient = True
            raise err
        if problem == "problem 2":
            raise ValueError("a problem the strategy cannot do")
        return ok(problem, strategy, params)

    rows = run_eval(problems, ["cot"], [1], SearchParams(), down, tmp_path, 64)
    assert [r["id"] for r in rows if r.get("failed")] == ["p1", "p2"]
    seen = []
    ok = solver([])

    def again(problem, strategy, params):
        seen.append(problem)
        return ok(problem, strategy, params)

    rows = run_eval(problems, ["cot"], [1], SearchParams(), again, tmp_path, 64)  # no --retry-failed
    assert seen == ["problem 1"]  # the server's failure is run again; the problem's own is kept
    assert [r["id"] for r in rows if r.get("failed")] == ["p2"]


def test_breaking_off_a_concurrent_run_cancels_the_jobs_in_flight(tmp_path):
    import threading
    import time

    import pytest

    problems = [Problem(f"p{i}", f"problem {i}", "42") for i in range(4)]
    ok = solver([])
    cancel = threading.Event()

    def solve(problem, strategy, params):
        if problem != "problem 0":
            cancel.wait(10)  # a long job: it ends at once when cancelled
        return ok(problem, strategy, params)

    def on_row(row):
        raise KeyboardInterrupt  # Ctrl-C while the first row is logged

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_eval(problems, ["cot"], [1], SearchParams(), solve, tmp_path, 64, on_row, concurrency=2, cancel=cancel)
    assert cancel.is_set() and time.monotonic() - t0 < 5  # the job in flight did not run its 10 s


def test_a_break_off_still_logs_the_jobs_that_had_finished():
    import threading
    import time

    from tts_tui.evaluate import _jobs_done

    cancel, stop = threading.Event(), threading.Event()

    def run(job):
        if job == "slow":
            cancel.wait(5)  # in flight until the break-off cancels it
            return [{"job": job}]
        return [{"job": job}]

    salvaged: list[dict] = []
    jobs = _jobs_done(["a", "slow", "b"], run, 3, stop, cancel, salvage=salvaged.extend)
    first, _ = next(jobs)
    time.sleep(0.3)  # the other quick job ends too, not yet read
    jobs.close()  # the caller breaks off (Ctrl-C)
    assert cancel.is_set()
    assert sorted([first] + [r["job"] for r in salvaged]) == ["a", "b"]  # done work kept; the cancelled one not


def test_the_plot_spans_the_accuracies_it_shows_and_escapes_names(tmp_path):
    table = [{"strategy": "majority", "n": 8, "mean_tokens": 2116, "accuracy": 0.717},
             {"strategy": "majority", "n": 16, "mean_tokens": 4297, "accuracy": 0.733},
             {"strategy": "a<b>+adaptive", "n": 16, "mean_tokens": 2528, "accuracy": 0.75}]
    plot_svg(table, tmp_path / "plot.svg", title="x & y")
    svg = (tmp_path / "plot.svg").read_text()
    assert ">0.60<" in svg and ">0.80<" in svg and ">0.50<" not in svg and ">0.90<" not in svg
    assert "a&lt;b&gt;+adaptive" in svg and "x &amp; y" in svg and "<b>" not in svg


def test_a_stop_for_a_server_down_says_to_run_the_same_command_again():
    from tts_tui.evaluate import _stopped_message

    down = _stopped_message([(f"p{i}", "RemoteError: connection refused", True) for i in range(3)])
    assert "run the same command once the server answers again" in down and "--retry-failed" not in down
    mixed = _stopped_message([("p0", "RemoteError: refused", True), ("p1", "ValueError: bad", False),
                              ("p2", "RemoteError: refused", True)])
    assert "--retry-failed" in mixed and "\n" not in mixed
