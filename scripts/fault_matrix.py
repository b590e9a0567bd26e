"""What a user sees when the server fails (issue 18): each fault, the command's exit status
and the lines it printed on stderr, through the real `tts` CLI.

    python scripts/fault_matrix.py [--real-server]

The faults come from the test suite's stand-in server (`tests/openai_standin.py`): refused
connections, 5xx and 429 answers, malformed and truncated JSON, a slow server, a wrong key,
and a server that stops answering in the middle of `tts eval` (then comes back: the
resume). `--real-server` adds a real llama-server (`scripts/serve_local.sh`, the tiny
model) killed in the middle of `tts eval`. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import llama_server  # noqa: E402
from llama_server import free_port  # noqa: E402
from openai_standin import Standin  # noqa: E402

from tts_tui.backends.openai import OpenAIClient, RemoteError, RemoteGenerator  # noqa: E402
from tts_tui.evaluate import read_rows  # noqa: E402

ENV = {**os.environ, "BAD_KEY": "sk-not-this-one"}


def tts(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tts_tui", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"(still running after {timeout:.0f} s: killed)")


def solve(url: str, *extra: str) -> subprocess.CompletedProcess:
    return tts("solve", "What is 6*7?", "--backend", "openai", "--base-url", url, "--model", "standin",
               "--strategy", "majority", "--n", "4", *extra)


def shown(proc: subprocess.CompletedProcess) -> str:
    """The stderr lines a user reads (the progress bar's redraws left out), and stdout's answer line."""
    lines = [x.strip() for x in proc.stderr.replace("\r", "\n").splitlines() if x.strip()]
    lines = [x for x in lines if "per minute" not in x and not x.startswith(("[", "#"))] or lines[-1:]
    answer = [x for x in proc.stdout.splitlines() if x.startswith("answer")]
    text = " / ".join(lines[-2:] + answer[:1])
    if "Traceback" in proc.stderr:
        text = "TRACEBACK: " + text  # a defect: the matrix shows it rather than stopping
    return text.replace("|", "\\|")


def stand_in_cases() -> list[tuple[str, str, str]]:
    rows = []
    rows.append(("URL that is not one (`localhost:8080`)", *_status(solve("localhost:8080"))))
    port = free_port()  # nothing listens there
    rows.append(("connection refused", *_status(solve(f"http://127.0.0.1:{port}"))))
    for label, faults, extra in [
        ("500 on every request (4 retries, backoff)", [500] * 50, ()),
        ("429, 503, 500 then answers (retried)", [429, 503, 500], ()),
        ("malformed JSON on every request", ["garbage"] * 50, ()),
        ("truncated JSON on every request", ["truncated"] * 50, ()),
        ("401, a wrong API key", [401] * 50, ("--api-key-env", "BAD_KEY")),
    ]:
        with Standin() as s:
            s.fail = list(faults)
            rows.append((label, *_status(solve(s.url, *extra))))
    with Standin() as s:  # the CLI waits 120 s per request; the client's own timeout, shortened
        s.fail = ["slow"] * 4
        client = OpenAIClient(s.url, retries=1, backoff=0.0, timeout=0.5)
        try:
            RemoteGenerator(client, "standin").root("What is 6*7?")
            rows.append(("a server slower than the timeout (0.5 s, client)", "0", "no error"))
        except RemoteError as err:
            rows.append(("a server slower than the timeout (0.5 s, client)", str(err.exit_code), str(err)))
    rows += dying_stand_in()
    return rows


def _status(proc: subprocess.CompletedProcess) -> tuple[str, str]:
    return str(proc.returncode), shown(proc)


def data_file(k: int) -> Path:
    path = Path(tempfile.mkdtemp(prefix="tts-faults-")) / "d.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(1, k + 1)))
    return path


def dying_stand_in() -> list[tuple[str, str, str]]:
    """The stand-in stops after a few answers (its socket closed), then a resume against it back."""
    data = data_file(4)
    out = data.parent / "out"
    s = Standin()
    port = s.server.server_port
    steps = []
    orig = s.completion

    def completion(body):
        if "seed" in body:  # a step (the capability probe's requests carry no seed)
            steps.append(1)
        if len(steps) == 12:  # the first problem's 4 samples x 3 steps, then gone
            threading.Thread(target=lambda: (s.server.shutdown(), s.server.server_close()), daemon=True).start()
        return orig(body)

    s.completion = completion
    with s:
        first = tts("eval", "--data", str(data), "--strategy", "majority", "--n", "4", "--backend", "openai",
                    "--base-url", s.url, "--model", "standin", "--out", str(out))
    kept = sum(not r.get("failed") for r in read_rows(out / "log.jsonl"))
    with Standin(port=port) as again:  # back on the same address
        second = tts("eval", "--data", str(data), "--strategy", "majority", "--n", "4", "--backend", "openai",
                     "--base-url", again.url, "--model", "standin", "--out", str(out))
    final = read_rows(out / "log.jsonl")  # the latest row of each problem
    return [(f"stand-in gone after the first problem, mid-`tts eval` ({kept}/4 rows kept)", *_status(first)),
            (f"the same `tts eval` run again, server back ({len(again.bodies)} requests: only the failed rows)",
             str(second.returncode), f"{sum(not r.get('failed') for r in final)}/{len(final)} rows answered; "
             + shown(second))]


def real_server_case() -> list[tuple[str, str, str]]:
    """llama-server with the tiny model, killed (SIGKILL) once the first row is in the log."""
    data = data_file(6)
    out = data.parent / "out"
    proc, url = llama_server.start("tiny", data.parent / "server.log", "-np", "2")
    early = False
    try:
        with open(data.parent / "eval.out", "w+") as so, open(data.parent / "eval.err", "w+") as se:
            ev = subprocess.Popen([sys.executable, "-m", "tts_tui", "eval", "--data", str(data), "--strategy",
                                   "majority", "--n", "2", "--backend", "openai", "--base-url", url, "--model",
                                   "tiny", "--budget-per-sample", "64", "--out", str(out)],
                                  stdout=so, stderr=se, text=True, env=ENV)
            logf = out / "log.jsonl"
            while ev.poll() is None and not (logf.exists() and logf.read_text().strip()):
                time.sleep(0.2)
            early = ev.poll() is not None  # the eval ended before the kill: nothing to show
            llama_server.stop(proc, signal.SIGKILL)
            try:
                ev.wait(timeout=900)
            finally:
                if ev.poll() is None:
                    ev.kill()
            so.seek(0)
            se.seek(0)
            done = subprocess.CompletedProcess(ev.args, ev.returncode, so.read(), se.read())
    finally:
        llama_server.stop(proc, signal.SIGKILL)
    kept = sum(not r.get("failed") for r in read_rows(out / "log.jsonl"))
    what = "finished before the kill" if early else "killed mid-`tts eval`"
    return [(f"llama-server {what} ({kept}/6 rows kept)", *_status(done))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real-server", action="store_true")
    args = ap.parse_args()
    print("| fault | exit | what it printed |\n| --- | --- | --- |", flush=True)
    for cases in (stand_in_cases, real_server_case) if args.real_server else (stand_in_cases,):
        try:
            rows = cases()
        except Exception as exc:  # noqa: BLE001 - the table so far stands; say what stopped this group
            rows = [(cases.__name__, "-", f"could not run: {type(exc).__name__}: {exc}")]
        for fault, code, text in rows:
            print(f"| {fault} | {code} | {text} |", flush=True)


if __name__ == "__main__":
    main()
