"""Seed a larger-share evaluation with the rows that a larger share cannot change.

    python scripts/reuse_uncapped.py eval-out/gsm8k20/log.jsonl eval-out/gsm8k20-b1024/log.jsonl --share 512

A problem whose samples all finished with an answer below their share, and whose CoT
chain finished below its budget, never met a cap: at a larger share it decodes the same
batches and gives the same rows (checked on gsm8k test/1 at 512 and 1024). Its rows are
copied into the new log, so `tts eval --budget-per-sample 1024` resumes and runs only the
problems a cap touched. Rows already in the new log are kept as they are.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from tts_tui.atomic import append_line
from tts_tui.evaluate import SINGLE, done_keys, read_rows  # SINGLE: one chain, whose budget is one share


def uncapped(rows: list[dict[str, Any]], share: int) -> bool:
    """True when no row of one problem shows a cap: a single chain below its share, and
    every logged sample answered within a run below N shares. Rows without samples
    (bracket) ride on the vote rows of the same run, so a problem needs one of those."""
    sampled = [r for r in rows if "samples" in r]
    for r in rows:
        if r["strategy"] in SINGLE and r["tokens"] >= share:
            return False
        if r["strategy"] not in SINGLE and "samples" not in r and not sampled:
            return False
    return all(r["tokens"] < share * r["n"] and all(s[0] is not None for s in r["samples"]) for r in sampled)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--share", type=int, required=True, help="tokens per sample of the source run")
    args = ap.parse_args()
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in read_rows(args.src):
        by_problem[r["id"]].append(r)
    keys = done_keys(args.dst)
    fits = {pid: uncapped(rows, args.share) for pid, rows in by_problem.items()}
    copied = [r for pid, rows in by_problem.items() if fits[pid] for r in rows if r["key"] not in keys]
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    for r in copied:  # one atomic line each, as `tts eval` writes them
        append_line(args.dst, json.dumps(r, ensure_ascii=False))
    skipped = sorted(pid for pid, ok in fits.items() if not ok)
    print(f"copied {len(copied)} rows; to run: {', '.join(skipped) or 'none'}")


if __name__ == "__main__":
    main()
