"""Do replayed adaptive rows show the stops a live adaptive run makes?

    python bench/adaptive_live.py [--data GSM8K] [--limit 5] [--n 16] [--wave 4]
                                  [--budget-per-sample 512] [--out eval-out/adaptive-live.jsonl]

`tts eval --adaptive` reads adaptive votes from a fixed-N run's samples (same seeds, same
order: `adaptive_replay`). That is exact only if a seed gives the same tokens whether its
sample is decoded among N or among a wave of K. Per problem this runs the fixed-N vote
once, replays the four adaptive variants on its samples, then runs each variant live,
and logs both: answer, samples used, why it stopped, tokens, traces cut. One JSON line
per problem (resumable); the summary goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tts_tui.adaptive_replay import replay
from tts_tui.atomic import append_line
from tts_tui.evaluate import _samples, done_keys, load_problems
from tts_tui.search.protocol import AdaptiveParams, SearchParams
from tts_tui.session import Solver
from tts_tui.verify.answers import equivalent

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k_dev.jsonl"
VARIANTS = [("majority", False), ("weighted", False), ("majority", True), ("weighted", True)]
FIELDS = ("answer", "samples_used", "stopped_by", "tokens", "cut")


def measure(solver: Solver, problem: str, n: int, share: int, a: AdaptiveParams) -> dict:
    fixed = SearchParams(n=n, budget=share * n)
    result, search = solver.solve(problem, "weighted", fixed, "confidence")
    samples = _samples(search, a.window)
    out = {}
    for strategy, cut in VARIANTS:
        name = f"{strategy}+adaptive" + ("+cut" if cut else "")
        ad = AdaptiveParams(**{**a.__dict__, "cut": cut})
        replayed = replay(samples, ad, weighted=strategy == "weighted", equivalent=equivalent)
        live_result, _ = solver.solve(problem, strategy, SearchParams(n=n, budget=share * n, adaptive=ad),
                                      "confidence")
        live = {**live_result.stats, "answer": live_result.answer, "tokens": live_result.tokens}
        out[name] = {"replayed": {k: replayed[k] for k in FIELDS}, "live": {k: live.get(k) for k in FIELDS}}
    return out


def summarize(rows: list[dict]) -> str:
    lines = []
    for name in (f"{s}+adaptive" + ("+cut" if c else "") for s, c in VARIANTS):
        pairs = [r["variants"][name] for r in rows]
        same_stop = sum(p["replayed"]["samples_used"] == p["live"]["samples_used"] for p in pairs)
        same_answer = sum(p["replayed"]["answer"] == p["live"]["answer"] for p in pairs)
        rt = sum(p["replayed"]["tokens"] for p in pairs)
        lt = sum(p["live"]["tokens"] for p in pairs)
        lines.append(f"{name:24} same stop {same_stop}/{len(pairs)}  same answer {same_answer}/{len(pairs)}  "
                     f"tokens replayed {rt} live {lt} (ratio {lt / max(1, rt):.3f})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--limit", type=int, default=5)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--wave", type=int, default=4)
    ap.add_argument("--budget-per-sample", type=int, default=512)
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", type=Path, default=Path("eval-out/adaptive-live.jsonl"))
    args = ap.parse_args()
    a = AdaptiveParams(wave=args.wave)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = done_keys(args.out)
    solver = Solver(args.model)
    try:
        for p in load_problems(args.data, args.limit):
            if p.id in done:
                continue
            variants = measure(solver, p.problem, args.n, args.budget_per_sample, a)
            append_line(args.out, json.dumps({"key": p.id, "id": p.id, "variants": variants}, ensure_ascii=False))
            print(f"{p.id}: " + "; ".join(f"{k} {v['replayed']['samples_used']}/{v['live']['samples_used']}"
                                         for k, v in variants.items()), file=sys.stderr)
    finally:
        solver.close()
    rows = [json.loads(x) for x in args.out.read_text(encoding="utf-8").splitlines() if x.strip()]
    print(summarize(rows))


if __name__ == "__main__":
    main()
