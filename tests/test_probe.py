"""Issue 16: the probe verifier: training recovers a planted signal, the file is tied to its
model, every strategy runs with it, and the training pipeline runs on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fakes import FakeGenerator
from tts_tui.errors import InputError
from tts_tui.search.protocol import SearchParams
from tts_tui.search.run import Search
from tts_tui.search.strategies import STRATEGIES, run_strategy
from tts_tui.verify.answers import MathAnswers
from tts_tui.verify.features import STAT_NAMES
from tts_tui.verify.probe import Probe, ProbeScorer, fit_logistic, metrics, train


def planted(problems=40, per=8, width=48, seed=0):
    """States whose label is read off one hidden direction (plus noise), and a per-problem
    offset that makes the pooled task harder than the within-problem one."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=width)
    stats, hidden, labels, groups, final = [], [], [], [], []
    for p in range(problems):
        offset = rng.normal(scale=2.0, size=width)
        for s in range(per):
            y = int(rng.random() < 0.5)
            for step in range(3):
                h = offset + rng.normal(size=width) + (1.5 if y else -1.5) * direction / np.linalg.norm(direction)
                hidden.append(h)
                stats.append(rng.normal(size=len(STAT_NAMES)))
                labels.append(y)
                groups.append(f"p{p}")
                final.append(step == 2)
    return (np.asarray(stats), np.asarray(hidden), np.asarray(labels), groups, np.asarray(final))


def test_training_recovers_a_planted_signal():
    stats, hidden, labels, groups, final = planted()
    probe, trials = train(stats, hidden, labels, groups, final, "sha", "m", folds=4, l2s=(1.0, 10.0), dims=(None, 8))
    best = max(t["within_auroc"] for t in trials)
    assert best > 0.85, trials
    assert probe.info["problems"] == 40 and probe.info["samples"] == 40 * 8
    # on its own training data the chosen probe ranks right above wrong
    scores = probe.predict(stats[final], hidden[final])
    assert metrics(scores, labels[final], np.asarray(groups)[final])["within_auroc"] > 0.9


def test_a_signal_free_set_scores_near_a_coin():
    rng = np.random.default_rng(3)
    stats, hidden, labels, groups, final = planted()
    labels = rng.integers(0, 2, size=len(labels))  # labels carry nothing
    _, trials = train(stats, hidden, labels, groups, final, "sha", "m", folds=4, l2s=(10.0,), dims=(None,))
    assert abs(trials[0]["within_auroc"] - 0.5) < 0.12


def test_logistic_regression_matches_a_known_solution():
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0.0, 0.0, 1.0, 1.0])
    w, b = fit_logistic(x, y, l2=1.0)
    assert w[0] > 0 and -w[0] * 1.5 == pytest.approx(b, abs=1e-6)  # symmetric: the boundary at 1.5


def test_metrics_on_known_cases():
    scores = np.array([0.9, 0.1, 0.8, 0.7])
    labels = np.array([1, 0, 0, 1])
    groups = np.array(["a", "a", "b", "b"])
    r = metrics(scores, labels, groups)
    assert r["within_auroc"] == 0.5  # a: right first; b: wrong first
    assert r["auroc"] == 0.75 and r["within_pairs"] == 2


def test_the_file_round_trips_and_refuses_another_model(tmp_path):
    stats, hidden, labels, groups, final = planted(problems=8, width=16)
    probe, _ = train(stats, hidden, labels, groups, final, "a" * 64, "m", folds=2, l2s=(1.0,), dims=(4,))
    path = tmp_path / "p.npz"
    probe.save(path)
    back = Probe.load(path, "a" * 64)
    assert np.allclose(back.predict(stats[:5], hidden[:5]), probe.predict(stats[:5], hidden[:5]))
    assert back.projection is not None and back.info["chosen"] == {"l2": 1.0, "dim": 4}
    with pytest.raises(InputError, match="trained for m"):
        Probe.load(path, "b" * 64)
    (tmp_path / "bad.npz").write_bytes(b"not a probe")
    with pytest.raises(InputError, match="not a verifier probe"):
        Probe.load(tmp_path / "bad.npz")


def test_the_layer_round_trips_a_format_1_file_reads_as_final_norm_and_a_bad_one_is_refused(tmp_path):
    plain = fake_probe()
    plain.save(tmp_path / "plain.npz")  # a final-norm probe stays format 1: older versions read it
    with np.load(tmp_path / "plain.npz") as z:
        assert json.loads(bytes(z["meta"]).decode())["format"] == 1
    probe = fake_probe()
    probe.layer = 17
    probe.save(tmp_path / "p.npz")
    assert Probe.load(tmp_path / "p.npz").layer == 17
    with np.load(tmp_path / "p.npz") as z:
        assert json.loads(bytes(z["meta"]).decode())["format"] == 2

    def rewrite(name: str, **meta_changes) -> None:
        with np.load(tmp_path / "p.npz") as z:
            arrays = {k: z[k] for k in z.files}
        meta = {**json.loads(bytes(arrays.pop("meta")).decode()), **meta_changes}
        meta = {k: v for k, v in meta.items() if v is not ...}
        np.savez(tmp_path / name, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)

    rewrite("old.npz", format=1, layer=...)  # written before probes named a layer
    assert Probe.load(tmp_path / "old.npz").layer is None
    rewrite("bad.npz", layer="seventeen")
    with pytest.raises(InputError, match="a part missing"):
        Probe.load(tmp_path / "bad.npz")
    rewrite("future.npz", format=3)
    with pytest.raises(InputError, match="format 3"):
        Probe.load(tmp_path / "future.npz")


def fake_probe(width=4) -> Probe:
    n = len(STAT_NAMES)
    w = np.zeros(n + width)
    w[STAT_NAMES.index("mean_logprob")] = 1.0
    return Probe("sha", "fake", np.zeros(n + width), np.ones(n + width), w, 0.0)


@pytest.mark.parametrize("strategy", sorted(set(STRATEGIES) - {"cot"}))
def test_every_strategy_runs_with_the_probe(strategy):
    params = SearchParams(n=4, m=2, budget=2000, max_steps=6)
    search = Search(FakeGenerator(), "q", params, MathAnswers(), ProbeScorer(fake_probe()))
    assert search.capture  # the probe asks the engine for states and statistics
    result = run_strategy(strategy, search)
    scored = [n for n in search.tree.nodes.values() if "probe" in n.scores]
    assert result.answer is not None
    if strategy not in ("majority", "keep-thinking", "auto"):  # these may read no score
        assert scored and all(0.0 <= n.scores["probe"] <= 1.0 for n in scored)


@pytest.mark.model
def test_the_pipeline_runs_on_the_tiny_model_and_the_probe_scores_a_real_run(tiny_path, tmp_path, capsys):
    from tts_tui.catalog.fetch import known_sha256
    from tts_tui.evaluate import Problem
    from tts_tui.session import EngineOptions, Solver
    from tts_tui.verifier_train import collect, load, probe_path

    problems = [Problem(f"q{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(1, 4)]
    solver = Solver(str(tiny_path), options=EngineOptions(n_ctx=4096, n_seq_max=16))
    try:
        collect(solver, problems, 4, 48, tmp_path / "s")
        collect(solver, problems, 4, 48, tmp_path / "s")  # resumable: nothing redone
        ds = load([tmp_path / "s"])
        assert ds.hidden.shape[1] == solver.model.n_embd and len(ds.labels) == len(ds.groups) > 0
        assert set(ds.groups) == {"q1", "q2", "q3"} and ds.stats.shape[1] == len(STAT_NAMES)
        assert len((tmp_path / "s" / "samples.jsonl").read_text().splitlines()) == 3
        # a probe for this model (fitted on these few states; labels forced to two classes)
        labels = ds.labels.copy()
        labels[::2] = 1 - labels[::2]
        _, sha = known_sha256(solver.model_path)
        probe, _ = train(ds.stats, ds.hidden, labels, ds.groups, ds.final, sha, "tiny", folds=3, l2s=(10.0,),
                         dims=(None,))
        probe.save(probe_path(solver.model_path, sha))
        assert solver.default_verifier() == "probe"
        for strategy in sorted(STRATEGIES):  # every strategy runs with the probe on a real model
            result, search = solver.solve("What is 2 + 3?", strategy, SearchParams(n=4, m=2, budget=192,
                                                                                      max_steps=3, step_tokens=24),
                                          "probe")
            assert any(n.hidden is not None for n in search.tree.nodes.values()), strategy
            if strategy not in ("cot", "majority", "keep-thinking", "auto"):  # these may read no score
                scored = [n for n in search.tree.nodes.values() if "probe" in n.scores]
                assert scored and all(0.0 <= n.scores["probe"] <= 1.0 for n in scored), strategy
            assert solver.engine.free_sequences == solver.engine.n_seq_max, strategy
    finally:
        solver.close()
    # the probe reads the final-norm state: a model loaded tapping a layer refuses it, and
    # its samples say their layer (a resume at another layer is refused)
    tapping = Solver(str(tiny_path), options=EngineOptions(n_ctx=4096, n_seq_max=16, hidden_layer=2))
    try:
        assert tapping.engine.hidden_layer == 2
        assert tapping.default_verifier() == "confidence"  # the probe it would refuse is not the default
        with pytest.raises(InputError, match="the probe reads the final-norm state; this engine captures layer 2"):
            tapping.solve("What is 2 + 3?", "best-of-n", SearchParams(n=2, budget=64), "probe")
        collect(tapping, problems[:1], 2, 32, tmp_path / "s2")
        assert json.loads((tmp_path / "s2" / "settings.json").read_text())["layer"] == 2
        assert load([tmp_path / "s2"]).hidden.shape[1] == tapping.model.n_embd
    finally:
        tapping.close()
    # a probe that reads a layer: a Solver with the default options opens at that layer
    probe.layer = 2
    probe.save(probe_path(tiny_path, sha))
    at_probe = Solver(str(tiny_path), options=EngineOptions(n_ctx=1024, n_seq_max=4))
    try:
        assert at_probe.engine.hidden_layer == 2
        _, search = at_probe.solve("What is 2 + 3?", "best-of-n", SearchParams(n=2, budget=64), "probe")
        scored = [n.scores["probe"] for n in search.tree.nodes.values() if "probe" in n.scores]
        assert scored and all(0.0 <= x <= 1.0 for x in scored)
    finally:
        at_probe.close()
    # `tts verifier eval` on final-norm states with a layer-2 probe: the probe's rows are
    # left out (they would score another layer's states), the other signals stay
    from tts_tui.cli.verifier_cmd import eval_command
    from tts_tui.errors import TTSError

    probe.info["trained_on"] = []
    probe.save(probe_path(tiny_path, sha))
    eval_command(samples_dir=tmp_path / "s", model=str(tiny_path), votes=None, probe_file_opt=None)
    out = capsys.readouterr().out
    assert "the probe is left out" in out and "confidence (whole path)" in out
    assert "\nprobe " not in out
    # --probe FILE: another probe file of this model (here a final-norm one) scores the set
    probe.layer = None
    probe.save(tmp_path / "final-norm.npz")
    eval_command(samples_dir=tmp_path / "s", model=str(tiny_path), votes=None, probe_file_opt=tmp_path / "final-norm.npz")
    out = capsys.readouterr().out
    assert "\nprobe " in out and "the probe is left out" not in out
    with pytest.raises(TTSError, match="no probe file at"):
        eval_command(samples_dir=tmp_path / "s", model=str(tiny_path), votes=None, probe_file_opt=tmp_path / "none.npz")
    final_norm = Solver(str(tiny_path), options=EngineOptions(n_ctx=1024, n_seq_max=4, hidden_layer=None))
    try:
        with pytest.raises(InputError, match="layer: 2 -> None"):
            collect(final_norm, problems[:1], 2, 32, tmp_path / "s2")
    finally:
        final_norm.close()


@pytest.mark.model
def test_capture_on_and_off_give_the_same_tokens(engine, tiny_model):
    from tts_tui.backends.llamacpp import BranchRequest, SamplingParams, StopRule

    root = engine.prefill(tiny_model.chat_tokens([{"role": "user", "content": "Name three colours."}]))

    def run(capture: bool):
        rule = StopRule(delimiter="\n", max_tokens=24, max_steps=4, capture=capture, conf_top_k=20 if capture else 0)
        reqs = [BranchRequest(root, SamplingParams(temperature=0.8, seed=s), rule, keep_kv=False) for s in (1, 2, 3)]
        outs = engine.generate(reqs)
        states = [step.hidden for steps in outs for step in steps]
        return [[t for step in steps for t in step.tokens] for steps in outs], states

    on, states_on = run(True)
    off, states_off = run(False)
    assert on == off
    # the capturing run did capture (a state of the model's width per step), the other none
    assert states_on and all(h is not None and h.shape == (tiny_model.n_embd,) for h in states_on)
    assert all(h is None for h in states_off)


# -- the probe's estimate that the chosen answer is right (issue 16 part 3) ---------------------
@pytest.mark.parametrize("strategy", ["weighted", "best-of-n", "majority", "beam"])
def test_a_probe_run_reports_p_right_as_the_chosen_nodes_probe_score(strategy):
    from tts_tui.search import events as ev

    params = SearchParams(n=4, m=2, budget=2000, max_steps=6)
    search = Search(FakeGenerator(), "q", params, MathAnswers(), ProbeScorer(fake_probe()))
    result = run_strategy(strategy, search)
    assert result.chosen is not None
    p = result.stats["p_right"]
    assert 0.0 <= p <= 1.0
    assert p == round(search.tree.nodes[result.chosen].scores["probe"], 4)
    done = [e for e in search.events if e.kind == ev.DONE]
    assert done[-1].data["stats"]["p_right"] == p  # the TUI reads it from the DONE event
    scored = [e.node_id for e in search.events if e.kind == ev.NODE_SCORED]
    assert result.chosen in scored  # announced, so the tree shows the chosen node's score
    # the fake captures no hidden state: the estimate says it read token statistics only
    assert result.stats["p_right_stats_only"] is True


def test_no_p_right_without_a_probe_or_when_scoring_fails():
    from fakes import FakeScorer

    params = SearchParams(n=4, budget=2000, max_steps=6)
    search = Search(FakeGenerator(), "q", params, MathAnswers(), FakeScorer())
    assert "p_right" not in run_strategy("weighted", search).stats
    search = Search(FakeGenerator(), "q", params, MathAnswers())
    assert "p_right" not in run_strategy("majority", search).stats

    class Broken(ProbeScorer):
        def score(self, search, nodes):
            raise RuntimeError("no features")

    search = Search(FakeGenerator(), "q", params, MathAnswers(), Broken(fake_probe()))
    result = run_strategy("majority", search)  # majority reads no score: finish is the first to ask
    assert result.answer is not None and "p_right" not in result.stats


def test_tts_solve_prints_p_right_when_a_probe_gave_it(capsys):
    from tts_tui.cli.app import _print_result
    from tts_tui.search.run import Result
    from tts_tui.search.votes import AnswerGroup

    groups = [AnswerGroup("42", 3, 2.1, [1, 2, 3])]
    _print_result(Result("42", 0.75, groups, 3, 500, 2.0, "weighted", stats={"p_right": 0.8312}))
    out = capsys.readouterr().out
    assert "P(right): 0.83 (probe)" in out.splitlines()
    _print_result(Result("42", 0.75, groups, 3, 500, 2.0, "weighted", stats={}))
    assert "P(right)" not in capsys.readouterr().out
    _print_result(Result("42", 0.75, groups, 3, 500, 2.0, "weighted",
                         stats={"p_right": 0.8312, "p_right_stats_only": True}))
    assert "P(right): 0.83 (probe, token statistics only: no hidden state here)" in capsys.readouterr().out


def test_a_shipped_probe_is_found_the_users_own_comes_first_and_an_unusable_own_leaves_it(tmp_path, monkeypatch):
    from tts_tui import session, verifier_train
    from tts_tui.catalog.fetch import known_sha256

    monkeypatch.setattr(verifier_train, "SHIPPED", tmp_path / "shipped")
    monkeypatch.setattr(verifier_train.paths, "data_dir", lambda: tmp_path / "user")
    import struct

    def text(t: str) -> bytes:
        return struct.pack("<Q", len(t)) + t.encode()

    model = tmp_path / "m.gguf"  # a header saying 4 layers: 0-2 can be tapped, 3 is the last
    model.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + text("general.architecture") + struct.pack("<I", 8)
                      + text("llama") + text("llama.block_count") + struct.pack("<II", 4, 4) + bytes(64))
    sha = known_sha256(model)[1]
    own, shipped = verifier_train.probe_path(model, sha), tmp_path / "shipped" / f"{sha[:16]}.npz"
    assert verifier_train.probe_files(model, sha) == [] and session.probe_file_for(model) == own  # where train writes
    assert session.probe_status(model) == (False, "not trained (tts verifier train)")
    width = len(STAT_NAMES) + 4

    def write(dest, bias: float, layer: int | None = 2) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        Probe(sha, "m", np.zeros(width), np.ones(width), np.zeros(width), bias, layer=layer).save(dest)

    write(shipped, 0.1)
    assert session.probe_file_for(model) == shipped and session._usable_probe(model)[0].bias == 0.1
    own.parent.mkdir(parents=True)
    own.write_bytes(b"half a download")  # the user's own, unusable: the shipped one stays in use
    assert verifier_train.probe_files(model, sha) == [own, shipped]
    assert session.probe_file_for(model) == shipped and session.probe_status(model)[0]
    write(own, 0.2)
    assert session.probe_file_for(model) == own and session._usable_probe(model)[0].bias == 0.2
    # the default verifier of an engine opened at a layer: the probe only where it reads that layer
    assert session.default_verifier_for(model, 2) == "probe" == session.default_verifier_for(model, "probe")
    assert session.default_verifier_for(model, None) == "confidence" == session.default_verifier_for(model, 1)
    write(own, 0.3, layer=3)  # the model's last layer: it cannot be tapped, so the shipped one is used
    assert session.probe_file_for(model) == shipped and session.probe_layer_for(model) == 2
    assert session.probe_status(model)[1].startswith("trained, reads layer 2")
    with pytest.raises(InputError, match="the probe reads layer 2; this engine captures the final-norm state"):
        session.require_probe(model, None, 4)
    write(own, 0.2)
    shipped.unlink()
    own.write_bytes(b"half a download")
    ok, why = session.probe_status(model)
    assert not ok and why.startswith("unusable") and session.probe_file_for(model) == own  # named in its refusal


# -- measuring, file checks, sample sets (review of issue 16) -------------------------------
def test_tied_scores_count_half_a_pair():
    r = metrics(np.array([0.5, 0.5, 0.5, 0.5]), np.array([1, 0, 1, 0]), np.array(["a", "a", "b", "b"]))
    assert r["auroc"] == 0.5 and r["within_auroc"] == 0.5


def test_calibration_error_on_known_cases():
    from tts_tui.verify.probe import calibration_error

    # every score 0.8, 80% right: calibrated; every score 0.8, none right: off by 0.8
    assert calibration_error(np.full(10, 0.8), np.array([1] * 8 + [0] * 2)) == pytest.approx(0.0)
    assert calibration_error(np.full(10, 0.8), np.zeros(10)) == pytest.approx(0.8)
    # two bins: 0.2 (half right, off 0.3) and 0.9 (all right, off 0.1), equal sizes
    assert calibration_error(np.array([0.2, 0.2, 0.9, 0.9]), np.array([1, 0, 1, 1])) == pytest.approx(0.2)
    assert np.isnan(calibration_error(np.array([0.5, 1.5]), np.array([1, 0])))  # no probability


def test_a_probe_file_with_a_part_missing_or_a_broken_zip_is_one_error(tmp_path):
    import json as _json

    stats, hidden, labels, groups, final = planted(problems=6, width=8)
    probe, _ = train(stats, hidden, labels, groups, final, "a" * 64, "m", folds=2, l2s=(1.0,), dims=(None,))
    good = tmp_path / "p.npz"
    probe.save(good)
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    meta = _json.loads(bytes(arrays["meta"]).decode())
    del meta["bias"]
    np.savez(tmp_path / "nobias.npz", **{**arrays, "meta": np.frombuffer(_json.dumps(meta).encode(), dtype=np.uint8)})
    with pytest.raises(InputError, match="part missing"):
        Probe.load(tmp_path / "nobias.npz", "a" * 64)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # a truncated download
    with pytest.raises(InputError, match="not a verifier probe"):
        Probe.load(cut)


def _write_set(d, rows):
    """A sample set on disk as tts verifier train writes it: one .npz and one log line each."""
    import json as _json

    from tts_tui.verifier_train import _save_npz

    d.mkdir(parents=True, exist_ok=True)
    with open(d / "samples.jsonl", "a", encoding="utf-8") as fh:
        for pid, arrays in rows:
            name = f"states-{pid}.npz"
            _save_npz(d / name, arrays)
            fh.write(_json.dumps({"id": pid, "file": name, "answers": ["1"] * len(arrays["final_label"])}) + "\n")


def _arrays(stats, hidden, labels, final, sample):
    return {"stats": stats, "hidden": hidden.astype(np.float16), "labels": labels.astype(np.int8),
            "sample": sample.astype(np.int16), "final": final, "final_label": labels[final].astype(np.int8)}


def test_a_sample_set_on_disk_trains_a_probe_that_finds_the_planted_signal(tmp_path):
    from tts_tui.verifier_train import load

    stats, hidden, labels, groups, final = planted(problems=24, width=16)
    g = np.asarray(groups)
    rows = []
    for pid in dict.fromkeys(groups):
        m = g == pid
        rows.append((pid, _arrays(stats[m], hidden[m], labels[m], final[m], np.repeat(np.arange(8), 3))))
    _write_set(tmp_path / "set", rows)
    ds = load([tmp_path / "set"])
    assert len(set(ds.groups)) == 24 and len(ds.labels) == len(labels)
    probe, trials = train(ds.stats, ds.hidden, ds.labels, ds.groups, ds.final, "s", "m", folds=4,
                          l2s=(1.0, 10.0), dims=(None,))
    assert max(t["within_auroc"] for t in trials) > 0.85, trials


def test_loading_reads_each_problem_once_and_only_those_asked_for(tmp_path):
    from tts_tui.verifier_train import load

    stats, hidden, labels, groups, final = planted(problems=3, per=2, width=4)
    g = np.asarray(groups)
    rows = [(pid, _arrays(stats[g == pid], hidden[g == pid], labels[g == pid], final[g == pid],
                          np.repeat(np.arange(2), 3))) for pid in dict.fromkeys(groups)]
    _write_set(tmp_path / "set", rows + rows[:1])  # p0 logged twice (a redone problem)
    assert sorted(set(load([tmp_path / "set"]).groups)) == ["p0", "p1", "p2"]
    assert len(load([tmp_path / "set"]).labels) == len(labels)  # p0 read once
    assert set(load([tmp_path / "set"], only={"p1"}).groups) == {"p1"}
    assert set(load([tmp_path / "set"], exclude={"p1"}, only={"p1", "p2"}).groups) == {"p2"}


def test_ids_that_collide_are_refused_and_names_never_share_a_file(tmp_path):
    from types import SimpleNamespace

    from tts_tui.evaluate import Problem
    from tts_tui.verifier_train import collect

    twice = [Problem("0", "What is 1+1?", "2"), Problem("0", "What is 2+2?", "4")]
    with pytest.raises(InputError, match="appears more than once"):
        collect(SimpleNamespace(), twice, 2, 64, tmp_path / "s")
    assert not (tmp_path / "s").exists()  # refused before anything was written
    from tts_tui.verifier_train import states_name

    names = {states_name(x) for x in ("a/b", "a_b", "a:b", "gsm8k_test_1")}
    assert len(names) == 4 and states_name("gsm8k_test_1") == "states-gsm8k_test_1.npz"


def test_training_problems_per_file_limits_and_levels_that_keep_unlevelled_rows(tmp_path):
    import json as _json

    from tts_tui.cli.verifier_cmd import _problems
    from tts_tui.errors import TTSError

    g, m = tmp_path / "g.jsonl", tmp_path / "m.jsonl"
    g.write_text("".join(_json.dumps({"id": f"g{i}", "problem": "p", "answer": "1"}) + "\n" for i in range(6)))
    m.write_text("".join(_json.dumps({"id": f"m{i}", "problem": "p", "answer": "1", "level": 1 + i % 5}) + "\n"
                         for i in range(10)))
    both = f"{g},{m}"
    got = [p.id for p in _problems(both, "4,2", 0, "1,2", {"g1"})]
    assert got == ["g0", "m0", "g2", "m1", "g3", "g4"]  # GSM8K rows kept, MATH at levels 1-2 only
    assert [p.id for p in _problems(both, "3", 0, None, set())] == ["g0", "m0", "g1"]
    with pytest.raises(TTSError, match="names 3 files"):
        _problems(both, "1,2,3", 0, None, set())
    with pytest.raises(TTSError, match="whole number"):
        _problems(both, "x", 0, None, set())


def test_an_empty_selection_is_refused_before_the_model_loads(tmp_path):
    import json as _json

    from tts_tui.cli.verifier_cmd import _problems
    from tts_tui.errors import TTSError

    m = tmp_path / "m.jsonl"
    m.write_text("".join(_json.dumps({"id": f"m{i}", "problem": "p", "answer": "1", "level": 1}) + "\n"
                         for i in range(3)))
    with pytest.raises(TTSError, match="no problems selected"):
        _problems(str(m), None, 0, "5", set())  # no level 5 here
    with pytest.raises(TTSError, match="no problems selected"):
        _problems(str(m), None, 3, None, set())  # skipped past the end
    assert [p.id for p in _problems(str(m), None, 1, None, {"m2"})] == ["m1"]  # skip, then the excluded ids


def test_the_layer_option_takes_a_number_final_or_auto_and_refuses_the_rest():
    from tts_tui.cli.verifier_cmd import layer_option
    from tts_tui.errors import TTSError
    from tts_tui.session import resolve_layer

    assert layer_option("17") == 17 and layer_option("final") is None and layer_option("auto") == "auto"
    for bad in ("bogus", "-1", "1.5"):
        with pytest.raises(TTSError, match="--layer"):
            layer_option(bad)
    # auto: 60% of the depth (17 of the default model's 28 layers), never past the last
    assert resolve_layer("auto", None, 28) == 17 and resolve_layer("auto", None, 3) == 1
    assert resolve_layer("auto", None, 2) is None  # a model of two layers has no middle one
    assert resolve_layer("probe", None, 28) is None
    assert resolve_layer(None, None, 28) is None and resolve_layer(5, None, 28) == 5


def test_the_engine_opens_at_its_probes_layer_unless_the_model_cannot_tap_it(monkeypatch, tmp_path):
    from tts_tui import session

    for probe_layer, want in ((17, 17), (27, None), (40, None), (None, None)):
        monkeypatch.setattr(session, "probe_layer_for", lambda _path, v=probe_layer: v)
        assert session.resolve_layer("probe", tmp_path / "m.gguf", 28) == want


def test_the_shipped_probe_is_the_default_models_and_reads_a_layer_it_can_tap():
    from tts_tui.catalog import load_catalog
    from tts_tui.verifier_train import SHIPPED

    entry = next(e for e in load_catalog().entries if e.default)
    probe = Probe.load(SHIPPED / f"{entry.sha256[:16]}.npz", entry.sha256)
    assert probe.layer == 17 and probe.n_stats == len(STAT_NAMES)
    assert probe.weights.shape == (len(STAT_NAMES) + 1536,)  # Qwen2.5-1.5B's width
    # 160 problems x 8 samples (1,280 labelled; info counts the 1,148 answered, whose final state a vote scores)
    assert probe.info["problems"] >= 150 and probe.info["samples"] >= 1100 and probe.info["states"] >= 5000
    assert not set(probe.info["trained_on"]) & report_ids()
    with pytest.raises(InputError):
        Probe.load(SHIPPED / f"{entry.sha256[:16]}.npz", "0" * 64)  # another model's checksum


def report_ids() -> set[str]:
    """The report slices' problem ids (never trained on), as `scripts/report_slices.py` lists them."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "report_slices.py"
    if not (script.parents[2] / "shared" / "data" / "gsm8k_dev.jsonl").is_file():
        pytest.skip("no ../shared/data beside the checkout")
    ids = set(subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout.split())
    assert len(ids) == 90
    return ids


def test_a_run_scored_without_the_probe_taps_no_layer(tmp_path, monkeypatch, tiny_path):
    # a tap costs on every decode: `tts solve` and `tts eval` with another verifier open the
    # engine at the final-norm state, unless a layer is named or states are kept
    from typer.testing import CliRunner

    from tts_tui import session
    from tts_tui.cli.app import app
    from tts_tui.session import engine_layer

    assert engine_layer("probe", "confidence") is None and engine_layer("probe", "deepconf") is None
    assert engine_layer("probe", "probe") == "probe" and engine_layer("probe", None) == "probe"
    assert engine_layer(17, "confidence") == 17 and engine_layer("auto", "confidence") == "auto"
    assert engine_layer("probe", "confidence", keeps_states=True) == "probe"

    opened: list = []

    class Opened(Exception):
        pass

    def solver(model, prm=None, options=None, on_progress=None):
        opened.append(options.hidden_layer)
        raise Opened

    monkeypatch.setattr(session, "Solver", solver)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "q0", "problem": "What is 2 + 3?", "answer": "5"}) + "\n")
    runs = [["solve", "1+1?", "--verifier", "confidence"], ["solve", "1+1?"],
            ["eval", "--verifier", "confidence"], ["eval", "--verifier", "confidence", "--layer", "2"],
            ["eval", "--verifier", "confidence", "--strategy", "majority", "--save-states", str(tmp_path / "s")]]
    for i, args in enumerate(runs):
        if args[0] == "eval":
            args = [*args, "--data", str(data), "--n", "2", "--out", str(tmp_path / f"out{i}")]
            if "--strategy" not in args:
                args += ["--strategy", "cot"]
        result = CliRunner().invoke(app, [*args, "--model", str(tiny_path)])
        assert isinstance(result.exception, Opened), (args, result.output, result.exception)
    assert opened == [None, "probe", None, 2, "probe"]
