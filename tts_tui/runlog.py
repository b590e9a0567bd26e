"""The run log: every run saved as one JSON file, written atomically, loadable back."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from tts_tui import paths
from tts_tui.atomic import write_json
from tts_tui.search.run import Result, Search

RUN_VERSION = 1


def run_record(search: Search, result: Result, settings: dict[str, Any], model: str) -> dict[str, Any]:
    t0 = search.started
    return {
        "version": RUN_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "problem": search.tree.problem,
        "model": model,
        "settings": {k: v for k, v in settings.items() if k != "extra"},
        "result": result.to_dict(),
        "tree": search.tree.to_dict(),
        "events": [dict(e.to_dict(), t=round(e.t - t0, 4)) for e in search.events],
    }


def save_run(record: dict[str, Any], runs_dir: Path | None = None) -> Path:
    runs_dir = runs_dir or paths.runs_dir()
    stamp = record["created"].replace(":", "").replace("-", "")
    strategy = record["settings"].get("strategy", "run")
    dest = runs_dir / f"{stamp}-{strategy}-{problem_tag(record['problem'])}.json"
    write_json(dest, record)
    return dest


def problem_tag(problem: str) -> str:
    """Eight hex digits of the problem's sha256: the same problem gets the same tag in
    every process (hash() of a str is salted per process, PYTHONHASHSEED)."""
    return hashlib.sha256(problem.encode("utf-8")).hexdigest()[:8]


def load_run(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def list_runs(runs_dir: Path | None = None) -> list[Path]:
    runs_dir = runs_dir or paths.runs_dir()
    return sorted(runs_dir.glob("*.json"), reverse=True) if runs_dir.is_dir() else []


def markdown_report(record: dict[str, Any]) -> str:
    """The chosen path and the answer table, for sharing."""
    res = record["result"]
    nodes = {n["id"]: n for n in record["tree"]["nodes"]}
    chosen = res.get("chosen")
    path = []
    while chosen is not None and chosen in nodes and nodes[chosen]["parent_id"] is not None:
        path.append(nodes[chosen])
        chosen = nodes[chosen]["parent_id"]
    s = record["settings"]
    lines = [
        f"# {s.get('strategy', 'run')} on {record.get('model', '?')}",
        "",
        f"**Problem.** {record['problem']}",
        "",
        f"**Answer:** {res['answer']} (confidence {res['confidence']:.0%}; {res['tokens']} tokens, {res['seconds']:.1f}s)",
        "",
        f"Settings: N={s.get('n')} M={s.get('m')} budget={s.get('budget')} temperature={s.get('temperature')} "
        f"seed={s.get('seed')} verifier={s.get('verifier')}",
        "",
        "## Chosen path",
        "",
    ]
    for i, n in enumerate(reversed(path), 1):
        scores = ", ".join(f"{k} {v:.3f}" for k, v in n.get("scores", {}).items())
        lines.append(f"{i}. {(n.get('forced', '') + n['text']).strip()}" + (f"  _({scores})_" if scores else ""))
    lines += ["", "## Answers", "", "| answer | votes | weight |", "| --- | --- | --- |"]
    for g in res.get("votes", []):
        lines.append(f"| {g['answer']} | {g['count']} | {g['weight']:.3f} |")
    return "\n".join(lines) + "\n"
