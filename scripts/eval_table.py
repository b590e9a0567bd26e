"""The README's evaluation table from `tts eval` logs: one markdown row per (log, strategy, N).

    python scripts/eval_table.py eval-out/gsm8k20/log.jsonl eval-out/gsm8k20-revise-m4/log.jsonl

Median seconds rather than mean: on a shared machine a few slow problems (another
process running) pull the mean up. For revise rows it adds what the chains did; for the
weighted row, how well the sample scores tell right answers from wrong ones (AUROC); for
every row but CoT's, how it does against CoT on the same problems (CoT rows from its own
log, else from the others), and which problems it gains or loses.

Mean tokens are generated tokens; mean prefill counts the tokens decoded but not generated
(the prompt, self-judge questions, bracket judge prompts, a PRM's inputs, forced text),
"-" for rows logged before it was recorded. A failed row (the run raised) counts as wrong
and is counted in its own column. "from N=8" marks a row read from a larger run; "N=8*"
from DVTS subtrees that shared that run's budget. A row read from a larger run counts the
prompt (decoded once for all its samples) in full and its share of the samples' own
prefill; a majority row never counts the verifier's inputs.

A log is read as `tts eval` reads it: the latest row per key, and, where its directory
has a settings.json, only the rows made with the current settings (those made with
others before --allow-settings-change are left out, and the count of them is printed).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tts_tui.evaluate import DERIVED_NOTE, chain_flips, current_rows, read_rows, summarize, verifier_auroc, versus


def chain_stats(rows: list[dict]) -> str:
    chains = [(c, r["gold"]) for r in rows for c in r.get("chains", [])]
    if not chains:
        return ""
    same = sum(1 for c, _ in chains if len(set(c)) == 1)
    flips = [chain_flips([c], gold) for c, gold in chains]
    return (f"{same}/{len(chains)} chains keep one answer; right->wrong {sum(f[0] for f in flips)}, "
            f"wrong->right {sum(f[1] for f in flips)}")


def auroc_note(rows: list[dict]) -> str:
    if rows and rows[0]["strategy"] != "weighted":
        return ""  # the votes share one set of samples: say it once, on the weighted row
    found = verifier_auroc(rows)
    return f"sample scores: AUROC {found[0]:.2f} ({found[1]} right, {found[2]} wrong)" if found else ""


def notes(rows: list[dict], cot: list[dict]) -> str:
    return "; ".join(x for x in (chain_stats(rows) or auroc_note(rows), cot_note(rows, cot)) if x)


def cot_note(rows: list[dict], cot: list[dict]) -> str:
    if not cot or not rows or rows[0]["strategy"] == "cot":
        return ""
    v = versus(rows, cot)
    short = lambda ids: ", ".join(i.split("/", 1)[-1].removesuffix(".json") for i in ids) or "none"
    return (f"vs CoT on the same {v['shared']}: {v['right']} against {v['baseline_right']}; "
            f"gains {short(v['gained'])}; loses {short(v['lost'])}")


def load(path: str) -> list[dict]:
    """The log's current rows; says on stderr how many were made with other settings."""
    rows = read_rows(Path(path))
    current = current_rows(rows, Path(path).parent)
    if len(current) < len(rows):
        print(f"# {path}: {len(rows) - len(current)} rows made with other settings left out", file=sys.stderr)
    return current


def main(paths: list[str]) -> None:
    logs = {p: load(p) for p in paths}
    any_cot = [r for rows in logs.values() for r in rows if r["strategy"] == "cot"]
    print("| strategy | N | problems | accuracy | failed | mean tokens | mean prefill | median s | from | log "
          "| notes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    derived = False
    for p, rows in logs.items():
        cot = [r for r in rows if r["strategy"] == "cot"] or any_cot
        for t in summarize(rows):
            mine = [r for r in rows if (r["strategy"], r["n"]) == (t["strategy"], t["n"])]
            prefill = "-" if t["mean_prefill"] is None else f"{t['mean_prefill']:.0f}"
            derived = derived or "*" in t["derived_from"]
            print(f"| {t['strategy']} | {t['n']} | {t['problems']} | {t['accuracy']:.1%} | {t['failed']} "
                  f"| {t['mean_tokens']:.0f} | {prefill} | {t['median_seconds']:.0f} | {t['derived_from']} "
                  f"| {Path(p).parent.name} | {notes(mine, cot)} |")
    if derived:
        print(f"\n{DERIVED_NOTE}")


if __name__ == "__main__":
    main(sys.argv[1:])
