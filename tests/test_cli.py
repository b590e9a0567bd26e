"""The CLI: one-line errors with exit code 2 for bad input; real runs on the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def tts(*args: str, stdin: str | None = None, timeout: int = 300):
    return subprocess.run([sys.executable, "-m", "tts_tui", *args], capture_output=True, text=True,
                          input=stdin, timeout=timeout)


def assert_one_line_error(proc, code=2, match=""):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert match in lines[0]


def test_missing_model_path(tmp_path):
    assert_one_line_error(tts("solve", "1+1?", "--model", str(tmp_path / "nope.gguf")), match="no such model")


def test_non_gguf_model(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_text("this is not a model")
    assert_one_line_error(tts("solve", "1+1?", "--model", str(bad)), match="not a GGUF")


def test_truncated_model(tmp_path, tiny_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_path.read_bytes()[:3_000_000])
    assert_one_line_error(tts("solve", "1+1?", "--model", str(cut)), match="could not load")


@pytest.mark.parametrize(
    "args,match",
    [
        (["solve", "", "--model", "tiny"], "empty"),
        (["solve", "1+1?", "--strategy", "nope"], "unknown strategy"),
        (["solve", "1+1?", "--strategy", "beam", "--n", "8", "--m", "3"], "must divide"),
        (["solve", "1+1?", "--n", "0"], "N must be"),
        (["solve", "1+1?", "--budget", "2"], "budget"),
        (["solve", "1+1?", "--verifier", "oracle"], "unknown verifier"),
        (["models", "pull", "no-such-model"], "unknown model id"),
        (["solve", "1+1?", "--strategy", "beam", "--adaptive"], "--adaptive works with"),
        (["solve", "1+1?", "--strategy", "majority", "--adaptive", "--stop-at", "1.5"], "--stop-at"),
        (["solve", "1+1?", "--strategy", "majority", "--adaptive", "--wave", "0"], "--wave"),
        (["solve", "1+1?", "--strategy", "majority", "--cut"], "--cut needs --adaptive"),
        (["solve", "1+1?", "--strategy", "majority", "--adaptive", "--cut", "--cut-window", "0"], "--cut-window"),
        (["solve", "1+1?", "--strategy", "majority", "--adaptive", "--cut", "--cut-keep", "1.5"], "--cut-keep"),
    ],
)
def test_bad_input(args, match):
    assert_one_line_error(tts(*args), match=match)


def test_a_server_eval_refuses_the_replayed_cut_before_connecting(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "q", "problem": "What is 1+1?", "answer": "2"}) + "\n")
    proc = tts("eval", "--data", str(data), "--strategy", "majority", "--adaptive", "--cut", "--backend", "openai",
               "--base-url", "http://127.0.0.1:9", "--model", "m", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, match="--cut rows are replayed")


def test_problem_longer_than_context(tiny_path):
    proc = tts("solve", "--model", "tiny", stdin="add these: " + "1 + " * 6000 + "1")
    assert_one_line_error(proc, match="context holds")


@pytest.mark.model
def test_solve_on_the_tiny_model_json(tiny_path):
    proc = tts("solve", "What is 2 + 3?", "--model", "tiny", "--strategy", "majority", "--n", "2", "--budget", "300",
               "--json")
    assert proc.returncode in (0, 1), proc.stderr
    record = json.loads(proc.stdout)
    assert record["settings"]["strategy"] == "majority"
    assert record["result"]["tokens"] <= 300
    assert len(record["tree"]["nodes"]) > 1
    assert record["events"][-1]["kind"] == "done"


@pytest.mark.model
def test_an_adaptive_solve_reports_its_stop(tiny_path):
    proc = tts("solve", "What is 2 + 3?", "--model", "tiny", "--strategy", "majority", "--n", "4", "--budget", "400",
               "--adaptive", "--wave", "2", "--json")
    assert proc.returncode in (0, 1), proc.stderr
    record = json.loads(proc.stdout)
    stats = record["result"]["stats"]
    checks = [e["data"] for e in record["events"] if e["kind"] == "stop_rule"]
    # one check per wave of 2, the last one's posterior the run's, and the stop where it says
    assert [c["samples_used"] for c in checks] == list(range(2, stats["samples_used"] + 1, 2))
    assert stats["posterior"] == checks[-1]["posterior"]
    if stats["stopped_by"] == "posterior":
        assert stats["posterior"] >= 0.95 and stats["tokens_saved_est"] >= 0
    else:
        assert stats["stopped_by"] in ("max-n", "budget") and stats["tokens_saved_est"] == 0
        assert stats["samples_used"] == 4 or stats["stopped_by"] == "budget"
    assert f"samples {checks[0]['samples_used']}/4: P(leader holds)" in proc.stderr


def test_models_list_and_path():
    proc = tts("models", "list")
    assert proc.returncode == 0
    assert "smollm2-135m-instruct-q4_1" in proc.stdout
    assert tts("models", "path", "tiny").stdout.strip().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_doctor_reports_backend():
    proc = tts("doctor")
    assert proc.returncode == 0
    assert "gpu offload:" in proc.stdout and "threads:" in proc.stdout
    assert "verifiers: confidence, self-judge, deepconf" in proc.stdout


def test_doctor_lists_a_models_verifiers_and_an_unusable_probe(tiny_path):
    from tts_tui.catalog.fetch import known_sha256
    from tts_tui.verifier_train import probe_path

    def line():
        proc = tts("doctor", "--model", str(tiny_path))
        assert proc.returncode == 0, proc.stderr
        return next(x for x in proc.stdout.splitlines() if x.startswith("verifiers:"))

    assert f"probe for {tiny_path.name}: not trained" in line() and "default: confidence" in line()
    dest = probe_path(tiny_path, known_sha256(tiny_path)[1])  # the test's own data dir
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(b"half a download")
    got = line()
    assert "unusable" in got and "default: confidence" in got  # a broken probe is never the default
    import numpy as np

    from tts_tui.verify.features import STAT_NAMES
    from tts_tui.verify.probe import Probe

    width = len(STAT_NAMES) + 4
    Probe(known_sha256(tiny_path)[1], "tiny", np.zeros(width), np.ones(width), np.zeros(width), 0.0,
          layer=3).save(dest)
    got = line()
    assert "trained, reads layer 3" in got and "default: probe" in got
    Probe(known_sha256(tiny_path)[1], "tiny", np.zeros(width), np.ones(width), np.zeros(width), 0.0,
          layer=29).save(dest)  # the tiny model's last (of 30): only its output rows exist
    got = line()
    assert "unusable: it reads layer 29, which a 30-layer model cannot tap" in got and "default: confidence" in got
    assert_one_line_error(tts("doctor", "--model", "no-such-model"), match="unknown model")


# -- issue 15 ---------------------------------------------------------------------------------
def console_script() -> str:
    """The installed `tts` entry point (pip install -e . puts it beside the interpreter)."""
    import shutil
    import sysconfig
    from pathlib import Path

    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        if (folder / "tts").is_file():
            return str(folder / "tts")
    found = shutil.which("tts")
    assert found, "the tts console script is not installed (pip install -e .)"
    return found


@pytest.mark.parametrize("args,match", [
    (["solve", "--bogus"], "No such option: --bogus"),
    (["--model", "x"], "No such option: --model"),
    (["eval", "--budget", "5"], "No such option: --budget"),
    (["solve", "--n", "many", "1+1?"], "--n"),
])
def test_usage_errors_of_the_console_script_are_one_line(args, match):
    proc = subprocess.run([console_script(), *args], capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, match=match)


def test_usage_errors_need_no_click_installed():
    """typer >= 0.22 vendors click and does not install it: the error path must not import it."""
    import importlib.util

    if importlib.util.find_spec("typer._click") is None:
        pytest.skip("this typer runs on click itself")
    code = ("import sys; sys.modules['click'] = None; sys.argv = ['tts', 'solve', '--bogus']; "
            "from tts_tui.cli.app import main; main()")
    assert_one_line_error(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120),
                          match="--bogus")


def test_run_file_names_are_the_same_in_every_process(tmp_path):
    code = ("import sys; from pathlib import Path; from tts_tui.runlog import save_run; "
            "rec = {'created': '2025-01-02T03:04:05', 'problem': 'What is 2 + 3?', 'settings': {'strategy': 'cot'}}; "
            "print(save_run(rec, Path(sys.argv[1])).name)")
    names = set()
    for seed in ("1", "2", "3"):
        env = {**__import__("os").environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / seed)], capture_output=True, text=True,
                              env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        names.add(proc.stdout.strip())
    assert len(names) == 1, names


def test_eval_with_an_m_that_does_not_divide_n_is_bad_input(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "q0", "problem": "What is 2 + 3?", "answer": "5"}) + "\n")
    proc = tts("eval", "--data", str(data), "--strategy", "beam", "--n", "4,6", "--m", "4", "--model", "tiny",
               "--budget-per-sample", "16", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, match="beam at N=6: M (4) must divide N")
    proc = tts("eval", "--data", str(data), "--strategy", "cot", "--n", "1", "--model", "tiny", "--layer", "middle",
               "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, match="--layer must be a layer number, 'final', 'auto' or 'probe', not 'middle'")
    proc = tts("eval", "--data", str(data), "--strategy", "cot", "--n", "1", "--model", "tiny", "--layer", "29",
               "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, match="has layers 0-28 to read before its last")
    assert not (tmp_path / "out").exists()  # refused before any settings were written
    proc = tts("eval", "--data", str(data), "--strategy", "cot", "--n", "1", "--backend", "openai", "--layer", "3",
               "--base-url", "http://127.0.0.1:9")
    assert_one_line_error(proc, match="--layer needs the local backend")


@pytest.mark.model
def test_eval_adaptive_writes_replayed_and_live_rows(tmp_path, tiny_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "q0", "problem": "What is 2 + 3?", "answer": "5"}) + "\n")
    out = tmp_path / "out"
    proc = tts("eval", "--data", str(data), "--strategy", "majority,auto", "--n", "4", "--model", "tiny",
               "--budget-per-sample", "48", "--adaptive", "--wave", "2", "--cut", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = {r["strategy"]: r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())}
    assert set(rows) == {"majority", "majority+adaptive", "majority+adaptive+cut", "auto+adaptive"}
    for name in ("majority+adaptive", "majority+adaptive+cut"):
        r = rows[name]
        assert r["subsampled_from"] == 4 and r["samples_used"] in (2, 4) and r["tokens"] <= rows["majority"]["tokens"]
    assert len(rows["majority"]["samples"][0]) == 6  # answer, score, tokens, lowest window, drops, finish
    assert rows["auto+adaptive"]["samples_used"] >= 1
    assert "majority+adaptive" in proc.stdout  # in the table


@pytest.mark.model
def test_eval_refuses_a_resume_with_other_settings(tmp_path, tiny_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "q0", "problem": "What is 2 + 3?", "answer": "5"}) + "\n")
    out = tmp_path / "out"
    args = ["eval", "--data", str(data), "--strategy", "cot", "--n", "1", "--model", "tiny",
            "--budget-per-sample", "16", "--out", str(out)]
    first = tts(*args)
    assert first.returncode == 0, first.stderr
    (row,) = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    doc = json.loads((out / "settings.json").read_text())
    assert row["settings_digest"] == doc["current"] and row["code"].startswith("0.")
    assert row["llama_cpp_python"] and row["math_verify"]  # the libraries that decide the numbers
    settings = doc["settings"][doc["current"]]["settings"]
    assert settings["model"] == "smollm2-135m-instruct-q4_1" and settings["temperature"] == 0.3
    assert row["prefill_tokens"] > 0 and row["tokens"] <= 16  # the prompt is prefill, not generated
    assert_one_line_error(tts(*args, "--temperature", "0.7"), match="temperature: 0.3 -> 0.7")
    again = tts(*args, "--temperature", "0.7", "--allow-settings-change")
    assert again.returncode == 0, again.stderr
    old, new = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]  # the old row kept
    current = json.loads((out / "settings.json").read_text())["current"]
    assert old == row and new["settings_digest"] == current != row["settings_digest"]  # and run again
    assert tts(*args, "--temperature", "0.7").returncode == 0
    assert len((out / "log.jsonl").read_text().splitlines()) == 2  # now done with these settings


@pytest.mark.model
def test_eval_stops_when_problems_keep_failing(tmp_path, tiny_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"What is {i} + 3?", "answer": str(i + 3)}) + "\n"
                            for i in range(5)))
    out = tmp_path / "out"
    code = ("import sys; from tts_tui.session import Solver\n"
            "def dead(*a, **k): raise RuntimeError('CUDA error: out of memory')\n"
            "Solver.solve = dead\n"
            "from tts_tui.cli.app import main\n"
            f"sys.argv = ['tts', 'eval', '--data', {str(data)!r}, '--strategy', 'cot', '--model', 'tiny', "
            f"'--budget-per-sample', '16', '--out', {str(out)!r}]\n"
            "main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = [x for x in proc.stderr.splitlines() if x.strip()][-1]
    assert last.startswith("error: stopped: 3 problems in a row failed, each with RuntimeError: CUDA error")
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q0", "q1", "q2"] and all(r["failed"] for r in rows)


def test_two_runs_saved_in_the_same_second_keep_both(tmp_path):
    from tts_tui.runlog import list_runs, load_run, save_run

    rec = {"created": "2025-01-02T03:04:05", "problem": "What is 2 + 3?", "settings": {"strategy": "cot"}}
    first = save_run({**rec, "result": 1}, tmp_path)
    second = save_run({**rec, "result": 2}, tmp_path)
    assert first != second and first.name == "20250102T030405-cot-" + second.name.split("-")[2].split("_")[0] + ".json"
    assert (load_run(first)["result"], load_run(second)["result"]) == (1, 2)
    assert list_runs(tmp_path) == [second, first]  # the later one lists first
    assert not list(tmp_path.glob(".*"))  # no temporary file left
