"""The README's evaluation table from `tts eval` logs: one markdown row per (strategy, N).

    python scripts/eval_table.py eval-out/gsm8k20/log.jsonl eval-out/gsm8k20-revise-m4/log.jsonl

Median seconds rather than mean: on a shared machine a few slow problems (another
process running) pull the mean up. For revise rows it adds what the chains did.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from tts_tui.verify.answers import equivalent


def load(paths: list[str]) -> dict[tuple[str, int, str], list[dict]]:
    groups: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    for p in paths:
        for line in Path(p).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            groups[(row["strategy"], row["n"], Path(p).parent.name)].append(row)
    return groups


def chain_stats(rows: list[dict]) -> str:
    chains = [(c, r["gold"]) for r in rows for c in r.get("chains", [])]
    if not chains:
        return ""
    same = sum(1 for c, _ in chains if len({a for a in c}) == 1)
    wrong_to_right = sum(
        1 for c, gold in chains for a, b in zip(c, c[1:])
        if not (a and equivalent(a, gold)) and b and equivalent(b, gold))
    right_to_wrong = sum(r.get("right_to_wrong", 0) for r in rows)
    return f"{same}/{len(chains)} chains keep one answer; right->wrong {right_to_wrong}, wrong->right {wrong_to_right}"


def main(paths: list[str]) -> None:
    print("| strategy | N | problems | accuracy | mean tokens | median s | log | notes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (strategy, n, where), rows in sorted(load(paths).items(), key=lambda kv: (kv[0][1], kv[0][0])):
        acc = sum(r["correct"] for r in rows) / len(rows)
        tokens = statistics.mean(r["tokens"] for r in rows)
        secs = statistics.median(r["seconds"] for r in rows)
        print(f"| {strategy} | {n} | {len(rows)} | {acc:.1%} | {tokens:.0f} | {secs:.0f} | {where} | {chain_stats(rows)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
