"""Issue 16, part 4: one sample run scored by every verifier. The vote table read from a
sample set, and `tts eval --save-states` writing the very samples its vote rows count."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_cli import tts
from tts_tui.verifier_train import ProblemSamples, _save_npz, problem_samples, vote_rows


def same(a: str, b: str) -> bool:
    return a.strip() == b.strip()


def one(pid, answers, right, scores, tokens=None):
    k = len(answers)
    stats = np.zeros((k, 3))
    stats[:, 0] = scores
    return ProblemSamples(pid, answers, right, tokens, stats, np.zeros((k, 2)))


SCORERS = {"s": lambda p: p.stats[:, 0]}


def test_vote_rows_on_known_cases():
    problems = [
        # majority picks 7 (wrong, 2 votes); the scorer's weight is on 9 (right): 0.9 > 0.1 + 0.1
        one("a", ["7", "7", "9", None], [False, False, True, False], [0.1, 0.1, 0.9, 0.0], [10, 20, 30, 40]),
        # all right
        one("b", ["3", "3", "3", "3"], [True] * 4, [0.5, 0.5, 0.5, 0.5], [1, 1, 1, 1]),
        # nothing answered: every vote is wrong, pass too
        one("c", [None] * 4, [False] * 4, [0.0] * 4, [5, 5, 5, 5]),
        # majority right, best-of (one heavy wrong sample) wrong, weighted right (0.6+0.6 > 0.95)
        one("d", ["1", "1", "2", "4"], [True, True, False, False], [0.6, 0.6, 0.95, 0.1], [2, 2, 2, 2]),
    ]
    rows = {r["row"]: r for r in vote_rows(problems, SCORERS, same)}
    assert rows["pass"]["correct"] == 3
    assert rows["majority"]["correct"] == 2  # b, d
    assert rows["weighted s"]["correct"] == 3  # a, b, d
    assert rows["best-of s"]["correct"] == 2  # a, b
    assert rows["majority"]["mean_tokens"] == round((100 + 4 + 20 + 8) / 4)
    assert all(r["problems"] == 4 for r in rows.values())


def test_a_tie_goes_to_the_first_answer_and_an_unscored_sample_weighs_nothing():
    tie = one("t", ["5", "6", "6", "5"], [False, True, True, False], [0.5, 0.5, 0.5, 0.5])
    rows = {r["row"]: r for r in vote_rows([tie], SCORERS, same)}
    assert rows["majority"]["correct"] == 0 and rows["weighted s"]["correct"] == 0  # 2:2, "5" seen first
    # the right sample's state was not captured: zeros would make exp-style signals maximal
    p = one("u", ["7", "9"], [False, True], [0.2, 0.0])
    p.has_state = [True, False]
    signal = {"s": lambda q: np.where(q.has_state, np.exp(q.stats[:, 0]), 0.0)}
    assert {r["row"]: r for r in vote_rows([p], signal, same)}["best-of s"]["correct"] == 0


def test_a_sample_set_is_read_cut_to_its_first_k_samples(tmp_path):
    # states of 3 samples: sample 0 has two steps (its last is final), sample 1 is unanswered,
    # sample 2 one step
    z = {"stats": np.array([[1.0], [2.0], [3.0], [4.0]], dtype=np.float32),
         "hidden": np.array([[1, 1], [2, 2], [3, 3], [4, 4]], dtype=np.float16),
         "labels": np.array([1, 1, 0, 0], dtype=np.int8), "sample": np.array([0, 0, 1, 2], dtype=np.int16),
         "final": np.array([False, True, False, True]), "final_label": np.array([1, 0, 0], dtype=np.int8)}
    _save_npz(tmp_path / "states-q.npz", z)
    rows = [{"id": "q", "file": "states-q.npz", "answers": ["5", None, "6"], "sample_tokens": [3, 4, 5]},
            {"id": "short", "file": "states-q.npz", "answers": ["5"]}]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = problem_samples(tmp_path, 2)
    assert [p.id for p in got] == ["q"]  # "short" holds fewer than 2 samples
    p = got[0]
    assert p.answers == ["5", None] and p.right == [True, False] and p.tokens == [3, 4]
    assert p.has_state == [True, False]
    assert p.stats[:, 0].tolist() == [2.0, 0.0]  # sample 0's final state; none for the unanswered one
    assert p.hidden.tolist() == [[2, 2], [0, 0]]
    assert problem_samples(tmp_path, 2, exclude={"q"}) == []


@pytest.mark.model
def test_eval_save_states_writes_the_samples_its_vote_rows_count(tmp_path, tiny_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in (1, 2)))
    out, states = tmp_path / "out", tmp_path / "states"
    args = ["eval", "--data", str(data), "--strategy", "majority,weighted", "--n", "2,4", "--model", "tiny",
            "--budget-per-sample", "48", "--out", str(out), "--save-states", str(states)]
    proc = tts(*args)
    assert proc.returncode == 0, proc.stderr
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    held = [json.loads(x) for x in (states / "samples.jsonl").read_text().splitlines()]
    assert [h["id"] for h in held] == ["q1", "q2"]  # one sample run per problem, kept once
    for h in held:
        row = next(r for r in log if r["id"] == h["id"] and r["strategy"] == "majority" and r["n"] == 4)
        # the same samples, in the same (seed) order, as the eval row's record of them
        assert h["answers"] == [s[0] for s in row["samples"]]
        assert h["sample_tokens"] == [s[2] for s in row["samples"]]
        assert sum(h["sample_tokens"]) == row["tokens"]
        assert len(h["texts"]) == 4 and all(isinstance(t, str) for t in h["texts"])
        with np.load(states / h["file"]) as z:
            assert z["hidden"].shape[1] > 0 and z["final"].sum() == sum(1 for a in h["answers"] if a)
            # each sample's token confidences, what scripts/tune_adaptive.py replays the cut on
            assert len(z["conf_len"]) == 4 and z["conf_len"].sum() == len(z["conf"]) > 0
            assert all(0 < c <= t for c, t in zip(z["conf_len"], h["sample_tokens"]))
    assert tts(*args).returncode == 0  # a resume writes nothing twice
    assert len((states / "samples.jsonl").read_text().splitlines()) == 2
    proc = tts("verifier", "judge", "--samples", str(states), "--model", "tiny")
    assert proc.returncode == 0, proc.stderr
    judged = {j["id"]: j["self_judge"] for j in map(json.loads, (states / "judge.jsonl").read_text().splitlines())}
    for h in held:  # a score in [0, 1] for each answered sample, none for the others
        assert [s is None for s in judged[h["id"]]] == [not a for a in h["answers"]]
        assert all(0.0 <= s <= 1.0 for s in judged[h["id"]] if s is not None)
    assert "judged 0 problems" in tts("verifier", "judge", "--samples", str(states), "--model", "tiny").stdout
    proc = tts("verifier", "eval", "--samples", str(states), "--model", "tiny", "--votes", "2")
    assert proc.returncode == 0, proc.stderr
    assert "weighted self-judge" in proc.stdout
    majority2 = sum(r["correct"] for r in log if r["strategy"] == "majority" and r["n"] == 2)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("majority "))
    assert line.split()[-1] == f"{majority2 / 2:.1%}"  # the eval's majority@2, read from the sample set
    # another sampling into the same set is refused; bracket's samples are kept too
    proc = tts(*args[:-2], "--save-states", str(states), "--temperature", "0.7")
    assert proc.returncode == 2 and "other settings" in proc.stderr
    other = tmp_path / "bracket-states"
    proc = tts("eval", "--data", str(data), "--strategy", "bracket", "--n", "2", "--model", "tiny",
               "--budget-per-sample", "48", "--out", str(tmp_path / "b"), "--save-states", str(other), "--layer", "2")
    assert proc.returncode == 0, proc.stderr
    assert len((other / "samples.jsonl").read_text().splitlines()) == 2
    assert json.loads((other / "settings.json").read_text())["layer"] == 2  # --layer: the states' layer
    assert json.loads((states / "settings.json").read_text())["layer"] is None  # no probe: the final-norm state
    proc = tts("eval", "--data", str(data), "--strategy", "beam", "--n", "2", "--m", "2", "--model", "tiny",
               "--save-states", str(tmp_path / "x"))
    assert proc.returncode == 2 and "keeps vote samples" in proc.stderr


@pytest.mark.model
def test_the_judge_scores_more_solutions_than_the_context_holds_at_once(tiny_path):
    from tts_tui.session import EngineOptions, Solver
    from tts_tui.verify.scorers import SelfJudgeScorer

    solver = Solver(str(tiny_path), options=EngineOptions(n_ctx=1024, n_seq_max=8))
    try:
        prompt = solver.generator.prompt_tokens("What is 2 + 3?")
        texts = [f"Step {i}. " + "We add the numbers one by one and check. " * 25 + "\\boxed{5}" for i in range(8)]
        assert sum(len(solver.model.tokenize(t)) for t in texts) > 1024  # all at once would not fit
        scores = SelfJudgeScorer(solver.engine).score_texts(prompt, texts)
        assert len(scores) == 8 and all(0.0 <= x <= 1.0 for x in scores)
        assert solver.engine.free_sequences == solver.engine.n_seq_max  # every handle released
    finally:
        solver.close()


def test_save_states_is_refused_for_a_server(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    proc = tts("eval", "--data", str(data), "--backend", "openai", "--base-url", "http://127.0.0.1:9",
               "--model", "m", "--save-states", str(tmp_path / "s"))
    assert proc.returncode == 2 and "--save-states needs the local backend" in proc.stderr
