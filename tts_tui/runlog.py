"""The run log: every run saved as one JSON file, written atomically, loadable back."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tts_tui import paths
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
    """Write `record` as a new file; never over another run's. The name is the time (to
    the second), the strategy and the problem's tag; a second run with the same name (the
    same problem and strategy ending in the same second) gets "_2", then "_3", ..., which
    sort after it, so the newest still lists first."""
    runs_dir = runs_dir or paths.runs_dir()
    stamp = record["created"].replace(":", "").replace("-", "")
    strategy = record["settings"].get("strategy", "run")
    stem = f"{stamp}-{strategy}-{problem_tag(record['problem'])}"
    runs_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=runs_dir)  # not *.json: never listed
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh, ensure_ascii=False, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        dest = _link_new(tmp, runs_dir, stem)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(runs_dir)  # the new name itself survives a crash
    return dest


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a platform that cannot open a folder (Windows) orders this itself
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_new(tmp: Path, runs_dir: Path, stem: str) -> Path:
    """Give the finished file `tmp` the first free name: a hard link is created whole and
    fails if the name exists, so two savers can never take one name, and a reader never
    sees a half-written run. Where links are not supported, the name is reserved by
    exclusive creation and then replaced."""
    for k in itertools.count(1):
        dest = runs_dir / (f"{stem}.json" if k == 1 else f"{stem}_{k}.json")
        try:
            os.link(tmp, dest)
        except FileExistsError:
            continue
        except OSError:  # no hard links here (some network or FAT file systems)
            try:
                with open(dest, "x"):
                    pass
            except FileExistsError:
                continue
            os.replace(tmp, dest)
        return dest
    raise AssertionError("unreachable")


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
