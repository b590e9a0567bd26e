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
    ],
)
def test_bad_input(args, match):
    assert_one_line_error(tts(*args), match=match)


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


def test_models_list_and_path():
    proc = tts("models", "list")
    assert proc.returncode == 0
    assert "smollm2-135m-instruct-q4_1" in proc.stdout
    assert tts("models", "path", "tiny").stdout.strip().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_doctor_reports_backend():
    proc = tts("doctor")
    assert proc.returncode == 0
    assert "gpu offload:" in proc.stdout and "threads:" in proc.stdout
