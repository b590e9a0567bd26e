"""Issue 17: adaptive votes (stop when the leader holds) and DeepConf cuts of weak traces."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes import FakeGenerator, FakeScorer
from tts_tui.search import events as ev
from tts_tui.search.protocol import AdaptiveParams, SearchParams
from tts_tui.search.run import Search
from tts_tui.search.stopping import cut_floor, leader_holds, lowest_window, normalised
from tts_tui.search.strategies import run_strategy
from tts_tui.search.tree import PRUNED
from tts_tui.verify.answers import MathAnswers


def make(gen, n=16, budget=100_000, **adaptive):
    params = SearchParams(n=n, budget=budget, adaptive=AdaptiveParams(**adaptive))
    return Search(gen, "What is 6*7?", params, MathAnswers(), FakeScorer())


def stops(search):
    return [e.data for e in search.events if e.kind == ev.STOP_RULE]


@pytest.mark.parametrize("masses, p", [([4], 0.96875), ([5, 1], 0.9375), ([2, 2], 0.5), ([3], 0.9375),
                                       ([1], 0.75), ([], 0.0)])
def test_the_posterior_on_known_cases(masses, p):
    assert leader_holds(masses) == pytest.approx(p, abs=1e-9)


def test_weighted_counts_integrate_to_the_exact_tail():
    assert leader_holds([4.0 + 1e-9]) == pytest.approx(0.96875, abs=2e-3)
    assert leader_holds([5.0 + 1e-9, 1.0]) == pytest.approx(0.9375, abs=2e-3)
    assert leader_holds([2.5, 0.5]) > leader_holds([2.0, 1.0])


def test_three_answers_by_monte_carlo():
    assert leader_holds([2, 2, 2]) == pytest.approx(1 / 3, abs=0.02)
    # a split rest is weaker than one rival, and stronger than one vote: merging the rivals
    # (0.910) or dropping one (0.980) would fail this
    assert leader_holds([6, 2]) + 0.01 < leader_holds([6, 1, 1]) < leader_holds([7, 1]) - 0.02
    assert leader_holds([6, 1, 1]) == leader_holds([6, 1, 1])  # deterministic


def test_the_window_and_the_floor():
    assert lowest_window([5, 5, 1, 1, 5], 2) == 1.0
    assert lowest_window([4, 2], 8) == 3.0  # shorter than the window: its mean
    assert lowest_window([], 4) is None
    assert cut_floor([1.0, 2.0, 3.0, 4.0, 5.0], keep=1.0) == 1.0
    assert cut_floor([], 0.9) is None
    assert normalised([0.5, 1.5]) == [0.5, 1.5] and normalised([2.0, 2.0]) == [1.0, 1.0]


def test_agreeing_first_wave_stops_there():
    gen = FakeGenerator(answers=("42",))
    search = make(gen, n=16, wave=4)
    result = run_strategy("majority", search)
    assert result.answer == "42"
    assert result.stats["samples_used"] == 4 and result.stats["stopped_by"] == "posterior"
    assert result.stats["posterior"] == pytest.approx(0.96875, abs=1e-4)
    assert search.spent == 4 * gen.depth * gen.step_tokens  # four samples, nothing more
    assert gen.calls == [4]  # one batched decode for the wave
    assert result.stats["tokens_saved_est"] == 12 * gen.depth * gen.step_tokens


def test_a_split_vote_goes_on_to_n_and_never_past_it():
    gen = FakeGenerator(answers=("42", "41"))
    search = make(gen, n=10, wave=4)
    result = run_strategy("majority", search)
    assert gen.calls == [4, 4, 2]
    assert result.stats["samples_used"] == 10 and result.stats["stopped_by"] == "max-n"
    assert [s["samples_used"] for s in stops(search)] == [4, 8, 10]
    assert stops(search)[0]["posterior"] == pytest.approx(0.5)  # 2:2 is a tie


def test_the_second_wave_can_decide():
    gen = FakeGenerator(answers=("42", "42", "42", "41", "42", "42", "42", "42"))
    search = make(gen, n=16, wave=4)
    result = run_strategy("majority", search)
    assert [round(s["posterior"], 4) for s in stops(search)] == [0.8125, 0.9805]  # 3:1, then 7:1
    assert result.stats["samples_used"] == 8 and result.answer == "42"


def test_unanswered_waves_go_on_and_vote_nothing():
    gen = FakeGenerator(answers=("42",), depth=50, step_tokens=5)  # never reaches an answer
    search = make(gen, n=8, budget=8 * 40, wave=4)  # each sample's share runs out first
    result = run_strategy("majority", search)
    assert result.answer is None
    assert [s["posterior"] for s in stops(search)] == [0.0, 0.0]
    assert result.stats["samples_used"] == 8


def test_the_budget_running_out_mid_wave_stops_the_draw():
    gen = FakeGenerator(answers=("42", "41"), depth=3, step_tokens=5)
    search = make(gen, n=8, budget=50, wave=4)  # shares of 6: the first wave takes 40, the second runs dry
    result = run_strategy("majority", search)
    assert search.spent == 50
    # the second wave's last two samples never started: they are not counted
    assert result.stats["stopped_by"] == "budget" and result.stats["samples_used"] == 6
    assert len(stops(search)) == 2


def test_weighted_counts_weigh_the_stop():
    # Two answers 2:2 by count, but the verifier scores one side far higher.
    gen = FakeGenerator(answers=("42", "41"))
    scored = make(gen, n=4, wave=4)
    scored.scorer = type("S", (), {"name": "fake", "score": lambda self, s, nodes: [
        0.95 if n.answer == "42" else 0.05 for n in nodes]})()
    result = run_strategy("weighted", scored)
    assert result.answer == "42"
    # 2:2 by count (0.5), but 3.17 : 0.83 weighted (a score of 0.05 counts as the 0.25 floor)
    assert 0.8 < stops(scored)[0]["posterior"] < 0.95


def test_weak_traces_after_the_first_wave_are_cut_and_do_not_vote():
    # Branches 0-3 (the first wave) are confident; 4-7 are not and answer "7".
    gen = FakeGenerator(answers=("42", "41", "42", "41", "7", "7", "7", "7"),
                        confidences=(9.0, 9.0, 9.0, 9.0, 2.0, 2.0, 2.0, 2.0))
    search = make(gen, n=8, wave=4, cut=True, keep=0.9, window=4)
    result = run_strategy("majority", search)
    cut = [n for n in search.tree.nodes.values() if n.finish == "cut"]
    assert len(cut) == 4 and all(n.status == PRUNED and n.answer is None for n in cut)
    assert all("below the floor 9.00" in n.meta["cut"] for n in cut)
    assert all(n.n_tokens == gen.step_tokens for n in cut)  # one step each, then cut
    assert "7" not in [g.answer for g in result.groups]
    assert result.stats["cut"] == 4 and result.stats["cut_floor"] == 9.0
    assert result.stats["samples_used"] == 8
    # what the fixed-N run would have spent on a sample: a whole trace, not a cut one
    assert result.stats["tokens_saved_est"] == 0  # N reached: nothing saved
    whole = gen.depth * gen.step_tokens
    assert search.spent == 4 * whole + 4 * gen.step_tokens


@pytest.mark.parametrize("strategy", ["weighted", "bracket", "auto"])
def test_every_vote_strategy_stops_when_decided(strategy):
    gen = FakeGenerator(answers=("42",))
    search = make(gen, n=16, wave=4)
    result = run_strategy(strategy, search)
    assert result.answer == "42"
    assert result.stats["samples_used"] == 4 and result.stats["stopped_by"] == "posterior"
    assert sum(gen.calls) == 4


def test_fixed_n_is_unchanged_without_adaptive():
    gen = FakeGenerator(answers=("42",))
    search = Search(gen, "q", SearchParams(n=8, budget=100_000), MathAnswers(), FakeScorer())
    result = run_strategy("majority", search)
    assert gen.calls == [8] and "samples_used" not in result.stats and not stops(search)


@pytest.mark.model
def test_an_adaptive_run_decodes_the_prompt_once_and_frees_every_sequence(tiny_path):
    from tts_tui.session import EngineOptions, Solver

    solver = Solver(str(tiny_path), options=EngineOptions(n_ctx=4096, n_seq_max=16))
    try:
        params = SearchParams(n=8, budget=8 * 48, max_steps=3, step_tokens=24, seed=1,
                              adaptive=AdaptiveParams(wave=2, stop_at=0.999, cut=True, window=8))
        result, search = solver.solve("What is 2 + 3?", "majority", params, "confidence")
        waves = len(stops(search))
        assert waves == 4 and result.stats["samples_used"] == 8  # 0.999 is not reached: every wave
        prompt = solver.engine.stats.prompt_tokens
        once = len(search.gen.prompt_tokens("What is 2 + 3?")) if hasattr(search.gen, "prompt_tokens") else None
        # the prompt once, not once per wave: all of it but its last token, which is
        # decoded with the first wave's first step (a handle keeps its last token pending)
        assert once and prompt == once - 1
        assert solver.engine.free_sequences == solver.engine.n_seq_max  # cut ones too
        # the traces cut are the ones counted as cut; a floor once a wave has answered (the
        # first wave that did sets it), and only traces after it are cut
        answered = [leaf for leaf in search.tree.nodes.values() if leaf.answer and not leaf.children]
        assert (result.stats["cut_floor"] is not None) == bool(answered)
        assert result.stats["cut"] == sum(n.finish == "cut" for n in search.tree.nodes.values())
        confs = [c for n in search.tree.nodes.values() for c in n.meta.get("conf", [])]
        assert confs and all(c > 0 for c in confs)
    finally:
        solver.close()


@pytest.mark.model
def test_the_engine_cuts_a_trace_below_the_floor_and_frees_it(engine, tiny_model):
    from tts_tui.backends.llamacpp import BranchRequest, SamplingParams, StopRule

    root = engine.prefill(tiny_model.chat_tokens([{"role": "user", "content": "Count to twenty."}]))
    free = engine.free_sequences
    rule = StopRule(delimiter=None, max_tokens=40, conf_top_k=20, cut_window=6, cut_below=1e9)
    kept = StopRule(delimiter=None, max_tokens=40, conf_top_k=20)
    greedy = SamplingParams(temperature=0.0)
    cut = engine.generate([BranchRequest(root, greedy, rule)])[0][-1]  # keep_kv asked, yet freed
    assert engine.free_sequences == free  # the cut branch's cells went back at once
    whole = engine.generate([BranchRequest(root, greedy, kept, keep_kv=False)])[0][-1]
    assert cut.finish == "cut" and cut.ended and len(cut.tokens) == 6  # the first full window
    assert len(cut.confidences) == 6 and all(c > 0 for c in cut.confidences)
    assert whole.tokens[:6] == cut.tokens and whole.finish != "cut"
    assert cut.confidences == pytest.approx(whole.confidences[:6], rel=1e-4)


# -- replayed rows: an adaptive vote read from a fixed-N run's samples ------------------------
def test_a_trace_record_marks_where_a_floor_would_cut():
    from tts_tui.adaptive_replay import cut_at, trace_record

    rec = trace_record([5.0, 5.0, 1.0, 1.0, 4.0, 0.5], window=2)  # window means 5, 3, 1, 2.5, 2.25
    assert rec["low"] == 1.0
    assert rec["drops"] == [[2, 5.0], [3, 3.0], [4, 1.0]]  # each new lowest, at its token count
    assert cut_at(rec["drops"], floor=2.0) == 4 and cut_at(rec["drops"], floor=0.5) is None


def replay_solver(gen_kw):
    def solve(problem, strategy, params):
        search = Search(FakeGenerator(**gen_kw), problem, params, MathAnswers(), FakeScorer())
        return run_strategy(strategy, search), search
    return solve


@pytest.mark.parametrize("answers, confidences", [
    (("42",), (9.0,)),  # decided by the first wave
    (("42", "41", "42", "7", "42", "42", "42", "42", "42", "42", "42", "42"), (9.0,)),  # later
    (("42", "41"), (9.0,)),  # never decided
    (("42", "41", "42", "41", "7", "7", "7", "7", "42", "42", "42", "42"), (9.0,) * 4 + (2.0,) * 4 + (9.5,) * 4),
])
def test_replayed_rows_match_live_adaptive_runs(tmp_path, answers, confidences):
    from tts_tui.evaluate import Problem, adaptive_names, run_eval
    from tts_tui.search.protocol import AdaptiveParams

    gen_kw = {"answers": answers, "confidences": confidences, "reverse_report": True}
    a = AdaptiveParams(wave=4, cut=True, window=5, keep=0.9)  # a window of one fake step
    base = SearchParams(n=12, m=2, max_steps=6, adaptive=a)
    names = adaptive_names(["majority", "weighted"], cut=True)
    rows = run_eval([Problem("p", "q", "42")], names, [12], base, replay_solver(gen_kw), tmp_path, 64)
    by = {r["strategy"]: r for r in rows}
    assert set(by) == set(names)
    for name in ("majority+adaptive", "weighted+adaptive", "majority+adaptive+cut", "weighted+adaptive+cut"):
        live_params = SearchParams(n=12, m=2, max_steps=6, budget=64 * 12,
                                   adaptive=AdaptiveParams(**{**a.__dict__, "cut": name.endswith("+cut")}))
        result, search = replay_solver(gen_kw)("q", name.split("+")[0], live_params)
        row = by[name]
        assert row["subsampled_from"] == 12  # labelled derived
        assert (row["answer"], row["tokens"], row["samples_used"], row["stopped_by"], row["cut"]) == (
            result.answer, result.tokens, result.stats["samples_used"], result.stats["stopped_by"],
            result.stats["cut"]), name
        assert row["posterior"] == pytest.approx(result.stats["posterior"], abs=1e-3)


def test_eval_names_for_adaptive():
    from tts_tui.evaluate import adaptive_names, plan

    names = adaptive_names(["cot", "majority", "auto"], cut=False)
    assert names == ["cot", "majority", "majority+adaptive", "auto+adaptive"]
    jobs = plan(names, [8], 4)
    assert ("weighted", 8, [8], ["majority", "majority+adaptive"]) in jobs  # one fixed run carries both
    assert ("auto+adaptive", 8, [8], ["auto+adaptive"]) in jobs  # auto runs adaptive live


# -- the reviewers' cases ---------------------------------------------------------------------
def test_auto_stopped_by_its_probes_reports_the_users_n():
    gen = FakeGenerator(answers=("42",))
    search = make(gen, n=16, wave=4)
    result = run_strategy("auto", search)
    assert (result.stats["samples_used"], result.stats["n_max"]) == (4, 16)
    # saved against what auto at fixed N draws for an easy problem (the table's 0.5 x 16),
    # not against the N given
    assert result.stats["saved_vs_n"] == 8
    assert result.stats["tokens_saved_est"] == 4 * gen.depth * gen.step_tokens


def test_auto_announces_the_probes_posterior_once():
    gen = FakeGenerator(answers=("42", "42", "41", "42", "42", "42", "42", "42"))
    search = make(gen, n=16, wave=4)
    run_strategy("auto", search)
    assert [s["samples_used"] for s in stops(search)] == [4, 8]


def test_a_vote_scored_zero_still_counts_in_the_stop():
    gen = FakeGenerator(answers=("42", "41"))
    search = make(gen, n=4, wave=4)
    search.scorer = type("S", (), {"name": "fake", "score": lambda self, s, nodes: [
        1.0 if n.answer == "42" else 0.0 for n in nodes]})()
    run_strategy("weighted", search)
    assert stops(search)[0]["posterior"] < 0.95  # 2 votes against 2 are not 4:0


def test_replay_cuts_at_the_last_token_as_the_engine_does():
    from tts_tui.adaptive_replay import replay

    a = AdaptiveParams(wave=1, cut=True, window=2, keep=1.0, stop_at=0.999)
    first = {"answer": "42", "score": 1.0, "tokens": 4, "low": 5.0, "drops": [[2, 5.0]], "finish": "eos"}
    # the second trace falls below the floor on its last token: cut unless that token
    # completed its answer (the answer stop comes first)
    weak = {"answer": "41", "score": 1.0, "tokens": 4, "low": 1.0, "drops": [[2, 6.0], [4, 1.0]]}
    eos = replay([first, {**weak, "finish": "eos"}], a, False, lambda x, y: x == y)
    stop = replay([first, {**weak, "finish": "stop"}], a, False, lambda x, y: x == y)
    assert (eos["cut"], stop["cut"]) == (1, 0)


def test_settings_take_up_adaptive_in_a_fixed_directory_and_name_rows_by_base(tmp_path):
    from tts_tui.evaluate import matters, open_settings, settings_diff

    fixed = {"model": "m", "n_seq_max": 64, "m": 4}
    open_settings(tmp_path, fixed, ["majority"])
    with_adaptive = {**fixed, "adaptive": {"stop_at": 0.95, "wave": 4, "keep": 0.9, "window": 32}}
    open_settings(tmp_path, with_adaptive, ["majority", "majority+adaptive"])  # not refused
    assert matters("n_seq_max", {"majority+adaptive"}) and matters("m", {"auto+adaptive"})
    assert not matters("m", {"bracket+adaptive"})
    assert settings_diff(with_adaptive, {**with_adaptive, "adaptive": {**with_adaptive["adaptive"], "wave": 8}},
                         ["majority+adaptive"])  # a changed wave is a change


def test_refit_keeps_the_measured_adaptive_settings():
    from tts_tui.refit import table_entry

    entry = table_entry("weighted+adaptive", 1.0, {"stop_at": 0.9, "wave": 2, "keep": 0.9, "window": 16})
    assert entry == {"strategy": "weighted", "n_scale": 1.0, "adaptive": True, "cut": False,
                     "adaptive_settings": {"stop_at": 0.9, "wave": 2, "keep": 0.9, "window": 16}}


def test_the_posterior_is_the_answer_the_vote_gives():
    assert leader_holds([13.66, 2.34], leader=1) < 0.01
    assert leader_holds([13.66, 2.34], leader=0) == leader_holds([13.66, 2.34])
    assert leader_holds([0.0, 3.0], leader=0) == 0.0


def _low_scorer(low: float, high: float):
    return type("S", (), {"name": "fake", "score": lambda self, s, nodes: [
        low if n.answer == "42" else high for n in nodes]})()


def test_a_floored_weight_never_stops_on_an_answer_the_vote_does_not_give():
    # 14 votes for 42 scored 0.04 and 2 for 41 scored 0.3: the raw vote gives 41 (0.60
    # against 0.56), while the floored masses lead with 42 (13.7 : 2.3, P 0.998)
    gen = FakeGenerator(answers=("42",) * 7 + ("41",))
    search = make(gen, n=16, wave=16)
    search.scorer = _low_scorer(0.04, 0.3)
    result = run_strategy("weighted", search)
    assert result.answer == "41"
    assert result.stats["stopped_by"] == "max-n" and stops(search)[0]["posterior"] < 0.05
    assert stops(search)[0]["leader"] == "41"


def test_the_replay_reads_the_floored_weights_as_the_live_vote_does():
    from tts_tui.adaptive_replay import replay

    samples = [{"answer": "42" if i % 8 != 7 else "41", "score": 0.04 if i % 8 != 7 else 0.3, "tokens": 10,
                "low": 1.0, "drops": [], "finish": "stop"} for i in range(16)]
    got = replay(samples, AdaptiveParams(wave=16), True, lambda x, y: x == y)
    assert (got["answer"], got["stopped_by"]) == ("41", "max-n") and got["posterior"] < 0.05


def test_a_wave_larger_than_n_draws_n():
    gen = FakeGenerator(answers=("42", "41"))
    result = run_strategy("majority", make(gen, n=3, wave=8))
    assert gen.calls == [3] and result.stats["samples_used"] == 3


def test_the_verdict_words():
    from tts_tui.search.stopping import stop_line, two_sides, verdict

    assert two_sides(0.9476, 0.95) == ("0.94", "0.95")  # never "0.95 < 0.95"
    assert two_sides(0.9500, 0.95) == ("0.95", "0.95")
    rule = {"posterior": 0.9476, "stop_at": 0.95, "stop": False, "samples_used": 4, "n_max": 16, "more": True}
    assert stop_line(rule) == "P(leader holds) 0.94 < 0.95: next wave"
    assert verdict({**rule, "more": False}) == "undecided"  # auto's probes, then its choice
    assert verdict({**rule, "ended": "budget"}) == "budget spent"
    assert verdict({**rule, "samples_used": 16}) == "N reached"
    assert verdict(rule, {"stopped_by": "search"}) == "on to a search"


def test_a_spent_budget_is_the_last_check():
    gen = FakeGenerator(answers=("42", "41"), depth=3, step_tokens=5)
    search = make(gen, n=8, budget=50, wave=4)
    run_strategy("majority", search)
    last = stops(search)[-1]
    assert last["ended"] == "budget" and not last["more"]


def test_auto_sent_on_to_a_search_says_so():
    gen = FakeGenerator(answers=tuple(str(i) for i in range(16)))  # no two probes agree: hard
    search = make(gen, n=16, wave=4)
    result = run_strategy("auto", search)
    assert result.stats["difficulty"] == "hard" and result.stats["chosen_strategy"] not in ("majority", "weighted")
    assert result.stats["stopped_by"] == "search" and result.stats["posterior"] < 0.95
    assert result.stats["n_max"] == 16


def test_the_replay_names_the_traces_it_cut():
    from tts_tui.adaptive_replay import replay

    a = AdaptiveParams(wave=1, cut=True, window=2, keep=1.0, stop_at=0.999)
    first = {"answer": "42", "score": 1.0, "tokens": 4, "low": 5.0, "drops": [[2, 5.0]], "finish": "eos"}
    weak = {"answer": "41", "score": 1.0, "tokens": 4, "low": 1.0, "drops": [[2, 1.0]], "finish": "eos"}
    got = replay([first, first, weak], a, False, lambda x, y: x == y)
    assert got["cut_samples"] == [2] and got["cut"] == 1


def test_tune_adaptive_replays_the_rule_on_a_sample_sets_confidences(tmp_path):
    import importlib.util
    import json

    import numpy as np

    from tts_tui.verifier_train import _save_npz

    spec = importlib.util.spec_from_file_location("tune_adaptive",
                                                  Path(__file__).parent.parent / "scripts" / "tune_adaptive.py")
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    d = tmp_path / "set"
    d.mkdir()
    # a first wave of steady traces (3:1), then two right ones and two that waver and are wrong
    answers = ["42", "42", "41", "42", "42", "41", "42", "41"]
    confs = [[5.0] * 40, [5.0] * 40, [4.8] * 40, [5.0] * 40, [5.0] * 40, [5.0] * 10 + [1.0] * 30,
             [5.0] * 40, [5.0] * 10 + [1.0] * 30]
    flat = np.concatenate([np.asarray(c, dtype=np.float32) for c in confs])
    _save_npz(d / "states-q.npz", {"final_label": np.asarray([a == "42" for a in answers], dtype=np.int8),
                                   "conf": flat, "conf_len": np.asarray([len(c) for c in confs], dtype=np.int32),
                                   "finish": np.asarray(["stop"] * 8, dtype="U8")})
    (d / "samples.jsonl").write_text(json.dumps({"id": "q", "gold": "42", "file": "states-q.npz", "answers": answers,
                                                 "sample_tokens": [40] * 8}) + "\n")
    probs = tune.problems([d])
    assert len(probs) == 1 and len(probs[0]["samples"]) == 8
    base = tune.score(probs, AdaptiveParams(wave=4))
    cut = tune.score(probs, AdaptiveParams(wave=4, cut=True, window=8, keep=0.9))
    assert base == {"right": 1, "tokens": 320, "cut": 0, "cut_right": 0}
    assert cut["cut"] == 2 and cut["cut_right"] == 0 and cut["right"] == 1 and cut["tokens"] < 320


def test_tokens_saved_count_whole_traces_not_cut_ones():
    # wave 1: 3:1; wave 2: two weak traces cut, two more 42s (5:1, 0.94); wave 3: 9:1 stops
    answers = ("42", "42", "41", "42", "7", "7", "42", "42") + ("42",) * 8
    confs = (9.0,) * 4 + (2.0, 2.0, 9.0, 9.0) + (9.0,) * 8
    gen = FakeGenerator(answers=answers, confidences=confs)
    search = make(gen, n=16, wave=4, cut=True, keep=0.9, window=4)
    result = run_strategy("majority", search)
    assert result.stats["samples_used"] == 12 and result.stats["cut"] == 2
    whole = gen.depth * gen.step_tokens
    assert result.stats["tokens_saved_est"] == 4 * whole  # not the cut-diluted mean per sample


def test_tts_solve_says_when_autos_probes_handed_over_to_a_search(capsys):
    from tts_tui.cli.app import _print_result
    from tts_tui.search.run import Result

    gen = FakeGenerator(answers=tuple(str(i) for i in range(16)))
    search = make(gen, n=16, wave=4)
    result = run_strategy("auto", search)
    _print_result(result)
    out = capsys.readouterr().out
    assert f"on to {result.stats['chosen_strategy']}" in out and "did not decide" in out
    _print_result(Result("42", 0.5, [], None, 10, 1.0, "majority", stats={}))
    assert "adaptive" not in capsys.readouterr().out


# -- the fourth review's cases ----------------------------------------------------------------
def test_bracket_stops_only_on_a_leader_no_match_can_overturn():
    # 9 x "41" and 3 x "42" after 12 samples: P = 0.954, past 0.95, but 3:1 is within the
    # judge's 4:1 cap, so a match could still hand the win to "42"
    answers = ("41", "41", "41", "42") * 4
    gen = FakeGenerator(answers=answers)
    search = make(gen, n=16, wave=4)
    search.scorer = type("S", (), {"name": "fake", "score": lambda self, s, nodes: [0.5 for _ in nodes]})()
    result = run_strategy("bracket", search)
    checks = stops(search)
    assert checks[2]["posterior"] >= 0.95 and checks[2].get("unsettled") and not checks[2]["stop"]
    assert result.stats["samples_used"] == 16 and result.stats["stopped_by"] == "max-n"
    # the reported posterior is the answer's the bracket gives
    groups = {g.answer: g.count for g in result.groups}
    assert result.answer == "42"  # the judge backs the 4-vote answer (the fake's truth)
    mine = leader_holds([groups["42"], groups["41"]], leader=0)  # 4 against 12: low
    assert mine < 0.05 and result.stats["posterior"] == pytest.approx(mine, abs=1e-3)


def test_bracket_stops_at_once_when_the_leader_outvotes_every_rival():
    from tts_tui.search.strategies.bracket import no_match_can_overturn
    from tts_tui.search.votes import AnswerGroup

    def g(answer, count):
        return AnswerGroup(answer=answer, count=count, members=[], weight=float(count))

    assert no_match_can_overturn([g("41", 8)]) and no_match_can_overturn([g("41", 8), g("42", 2)])
    assert not no_match_can_overturn([g("41", 9), g("42", 3)])  # 3:1 within the judge's cap
    assert not no_match_can_overturn([g("41", 2), g("42", 8)])  # the rival outvotes the leader


def test_a_cancel_or_a_spent_budget_saves_nothing():
    gen = FakeGenerator(answers=("42", "41"))
    search = make(gen, n=16, wave=4)
    search.listeners.append(lambda e: search.cancel.set() if e.kind == ev.STOP_RULE else None)
    result = run_strategy("majority", search)
    assert result.stats["stopped_by"] == "cancelled" and result.stats["samples_used"] == 4
    assert result.stats["tokens_saved_est"] == 0
    gen = FakeGenerator(answers=("42", "41"), depth=3, step_tokens=5)
    search = make(gen, n=16, budget=12 * 15, wave=4)  # room for 12 whole samples of 16
    result = run_strategy("majority", search)
    assert result.stats["stopped_by"] == "budget" and result.stats["tokens_saved_est"] == 0


def test_a_budget_spent_by_the_last_wave_reads_as_n_reached():
    from tts_tui.search.stopping import stop_line

    gen = FakeGenerator(answers=("42", "41"), depth=3, step_tokens=5)
    search = make(gen, n=8, budget=8 * 15, wave=4)  # every sample whole, the budget then spent
    result = run_strategy("majority", search)
    assert search.spent == 8 * 15
    assert result.stats["stopped_by"] == "max-n" and result.stats["samples_used"] == 8
    last = stops(search)[-1]  # the live line says what the final label says
    assert "ended" not in last and stop_line(last).endswith(": N reached")


def test_samples_the_budget_never_started_are_not_counted():
    gen = FakeGenerator(answers=("42", "41"), depth=3, step_tokens=5)
    search = make(gen, n=16, budget=130, wave=4)  # shares of 8: 2 steps (10 tokens) a sample
    result = run_strategy("majority", search)
    started = [n for n in search.tree.nodes.values() if n.kind != "root" and n.parent_id == search.tree.root.id
               and n.tokens]
    assert search.spent == 130 and len(started) < 16
    assert result.stats["samples_used"] == len(started) and result.stats["stopped_by"] == "budget"
    assert stops(search)[-1]["ended"] == "budget"


def test_auto_keeps_the_probes_posterior_when_they_use_up_n():
    gen = FakeGenerator(answers=("42", "42", "41", "7"))  # 2:1:1: medium, and N = the probes
    search = make(gen, n=4, wave=4)
    search.scorer = type("S", (), {"name": "fake", "score": lambda self, s, nodes: [0.5 for _ in nodes]})()
    result = run_strategy("auto", search)  # equal weights: the weighted vote's posterior is the plain one
    assert result.stats["samples_used"] == 4 and result.stats["posterior"] is not None
    assert result.stats["posterior"] == pytest.approx(stops(search)[0]["posterior"], abs=1e-4)


def test_auto_reports_the_posterior_of_the_answer_its_weighted_vote_gives():
    # 1 x "42", 2 x "41", 1 x "7" at N = the probes: medium, a weighted vote of the probes;
    # the scorer puts "42" first, so the plain vote's posterior (for "41") is not its own
    gen = FakeGenerator(answers=("42", "41", "41", "7"))
    search = make(gen, n=4, wave=4)
    search.scorer = type("S", (), {"name": "fake", "score": lambda self, s, nodes: [
        1.0 if n.answer == "42" else 0.1 for n in nodes]})()
    result = run_strategy("auto", search)
    assert result.answer == "42" and stops(search)[0]["leader"] == "41"
    # weights 1 : 0.25 (floored) : 0.25 : 0.25, scaled to 4 votes: 42 holds 2.29 of them
    masses = [4 * 1.0 / 1.75, 4 * 0.5 / 1.75, 4 * 0.25 / 1.75]
    assert result.stats["posterior"] == pytest.approx(leader_holds(masses, leader=0), abs=0.01)
    assert result.stats["posterior"] != stops(search)[0]["posterior"]


def test_a_stop_at_a_tie_or_below_is_refused():
    from tts_tui.errors import TTSError
    from tts_tui.search.strategies import validate

    for bad in (0.5, 0.3, 1.0):
        with pytest.raises(TTSError, match="--stop-at"):
            validate("majority", SearchParams(adaptive=AdaptiveParams(stop_at=bad)))
    validate("majority", SearchParams(adaptive=AdaptiveParams(stop_at=0.51)))


def test_an_events_node_shares_no_container_with_the_search():
    gen = FakeGenerator(answers=("42",))
    search = make(gen, n=4, wave=4)
    run_strategy("weighted", search)
    added = [e for e in search.events if e.kind == ev.NODE_ADDED]
    node = search.tree.nodes[added[-1].node_id]
    copy = added[-1].data["node"]
    assert copy["scores"] is not node.scores and copy["tokens"] is not node.tokens
    node.scores["late"] = 1.0  # the search thread re-scoring after a wave
    assert "late" not in copy["scores"]
    # a node's later annotations (a revision's question, a sample's number) still reach
    # a tree rebuilt from the events, as the TUI and a replayed run build theirs
    from tts_tui.search.tree import Tree

    rebuilt = Tree("What is 6*7?")
    for e in search.events:
        ev.apply_event(rebuilt, e)
    firsts = [n for n in search.tree.nodes.values() if "sample" in n.meta]
    assert firsts and all(rebuilt.nodes[n.id].meta["sample"] == n.meta["sample"] for n in firsts)


def test_a_cut_trace_shows_no_answer_it_stated_before_the_cut():
    from tts_tui.search.tree import FINISHED

    # branches 4-7 state their answer in their first step and write on, to be cut in the second
    gen = FakeGenerator(answers=("42", "41", "42", "41", "7", "7", "7", "7"), chatter=frozenset(range(4, 8)),
                        depth=1, stops_at_answer=False, confidences=(9.0,) * 4 + (2.0,) * 4, cut_after=2)
    search = make(gen, n=8, wave=4, cut=True, keep=0.9, window=4)
    result = run_strategy("majority", search)
    cut = [n for n in search.tree.nodes.values() if n.finish == "cut"]
    assert len(cut) == 4
    for leaf in cut:
        path = search.tree.path(leaf)
        assert len(path) == 2 and path[0].answer == "7"  # it did state an answer, then was cut
        assert all(n.status != FINISHED for n in path)
    assert "7" not in [g.answer for g in result.groups]



def test_the_words_for_an_unsettled_check_and_for_what_is_saved_against():
    from tts_tui.search.stopping import saved_against, stop_line

    rule = {"posterior": 0.954, "stop_at": 0.95, "stop": False, "unsettled": True, "more": True,
            "samples_used": 12, "n_max": 16}
    assert stop_line(rule) == "P(leader holds) 0.95 ≥ 0.95: a match could overturn it, next wave"
    assert saved_against({"n_max": 16}) == "N=16" and saved_against({"n_max": 16, "saved_vs_n": 16}) == "N=16"
    assert saved_against({"n_max": 16, "saved_vs_n": 8}) == "the fixed run's 8 samples"
