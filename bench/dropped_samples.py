"""How many answered samples the old leaf rule dropped, and the tokens spent after answers.

    python bench/dropped_samples.py [--data GSM8K] [--limit 40] [--n 8] [--budget-per-sample 512]
                                    [--model default] [--out eval-out/dropped-gsm8k40.jsonl]

Samples every problem as `tts eval` samples its votes (same seeds, temperature, share and
step limit), but with the engine's answer stop off: that is the generation before the
fix, token for token. Each sample's leaf is then read twice:
- the old rule: a leaf had an answer only when its own step carried a final marker (or
  the model ended it, or the budget cut it), so a sample that wrote `\\boxed{18}` and then
  kept writing code was dropped from every vote;
- the new rule: a leaf carries the answer of its whole path (what `Search` does now).
It also counts the tokens each sample generated after its first complete final answer
(`answer_complete`): what the answer stop saves. One JSON line per problem (resumable);
the summary goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tts_tui.atomic import append_line
from tts_tui.backends.protocol import answer_complete
from tts_tui.evaluate import done_keys, load_problems
from tts_tui.search.protocol import SearchParams
from tts_tui.search.run import Search
from tts_tui.search.tree import Node
from tts_tui.session import Solver

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k_dev.jsonl"


def _has_final_marker(text: str) -> bool:
    """The marker test of the rule before the fix."""
    return "\\boxed" in text or "answer is" in text.lower() or "final answer" in text.lower()


def old_answer(search: Search, leaf: Node) -> str | None:
    """The leaf's answer under the rule before the fix (`Search._add_step` at 237ec76)."""
    text = search.tree.path_text(leaf)
    answer = search.answers.extract(text)
    if leaf.finish in ("eos", "stop") or (answer is not None and _has_final_marker(leaf.text)):
        return answer
    if leaf.finish in ("budget", "cancelled", "context"):
        return answer
    return None


def tokens_after_answer(search: Search, leaf: Node, detok) -> int | None:
    """Tokens generated after the path's first complete final answer (None if none)."""
    path = search.tree.path(leaf)
    text = ""
    for i, node in enumerate(path):
        text += node.forced
        raw = b""
        for j, tok in enumerate(node.tokens):
            raw += detok(tok)
            if answer_complete(text + raw.decode("utf-8", "ignore")):
                return len(node.tokens) - j - 1 + sum(n.n_tokens for n in path[i + 1 :])
        text += node.text
    return None


def measure(solver: Solver, problem: str, params: SearchParams) -> list[dict]:
    search = solver.new_search(problem, "majority", params)
    try:
        paths = search.expand([search.tree.root] * params.n, max_steps=params.max_steps, keep=False,
                              max_total=params.share, answer_stop=False)
        leaves = [p[-1] for p in paths if p]
        return [{
            "old": old_answer(search, leaf),
            "new": leaf.answer,
            "tokens": sum(n.n_tokens for n in search.tree.path(leaf)),
            "after_answer": tokens_after_answer(search, leaf, solver.model.piece),
            "finish": leaf.finish,
        } for leaf in leaves]
    finally:
        search.release_all()


def summarize(rows: list[dict]) -> str:
    samples = [s for r in rows for s in r["samples"]]
    old_dropped = sum(s["old"] is None and s["new"] is not None for s in samples)
    new_dropped = sum(s["new"] is None and s["after_answer"] is not None for s in samples)
    after = [s["after_answer"] or 0 for s in samples]
    spent = sum(s["tokens"] for s in samples)
    return "\n".join([
        f"problems {len(rows)}, samples {len(samples)}, "
        f"with a complete final answer {sum(s['after_answer'] is not None for s in samples)}",
        f"answered samples dropped by the old leaf rule: {old_dropped}",
        f"answered samples without an answer under the new rule: {new_dropped}",
        f"samples that wrote on after their answer: {sum(a > 0 for a in after)}",
        f"tokens after the first complete answer: {sum(after)} of {spent} "
        f"({sum(after) / max(1, spent):.1%}); {sum(after) / max(1, len(samples)):.1f} per sample",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--budget-per-sample", type=int, default=512)
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", type=Path, default=Path("eval-out/dropped-gsm8k40.jsonl"))
    args = ap.parse_args()
    problems = load_problems(args.data, args.limit)
    params = SearchParams(n=args.n, budget=args.budget_per_sample * args.n)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = done_keys(args.out)
    solver = Solver(args.model)
    try:
        for p in problems:
            if p.id in done:
                continue
            samples = measure(solver, p.problem, params)
            append_line(args.out, json.dumps({"key": p.id, "id": p.id, "samples": samples}, ensure_ascii=False))
            print(f"{p.id}: old rule dropped {sum(s['old'] is None and s['new'] is not None for s in samples)}",
                  file=sys.stderr)
    finally:
        solver.close()
    rows = [json.loads(x) for x in args.out.read_text(encoding="utf-8").splitlines() if x.strip()]
    print(summarize(rows))


if __name__ == "__main__":
    main()
