"""Issue 17's figures from a `tts eval --adaptive` log: accuracy and tokens against
majority@16, the samples each adaptive vote used, and the stop rule's mistakes.

    python scripts/adaptive_report.py eval-out/adaptive-gsm8k60 [--against majority --n 16]
                                      [--plot docs/adaptive-gsm8k60.svg]

A mistake: a problem the same vote at the fixed N got right and the adaptive vote got
wrong (it stopped on a wrong leader, or cut the traces that would have outvoted it).
Only problems every row ran are compared.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from tts_tui.evaluate import current_rows, plot_svg, read_rows, summarize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--against", default="majority")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--plot", type=Path, help="Also write accuracy against tokens of every row here (SVG).")
    args = ap.parse_args()
    rows = [r for r in current_rows(read_rows(args.out / "log.jsonl"), args.out) if not r.get("failed")]
    cells: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    for r in rows:
        cells[(r["strategy"], r["n"])][r["id"]] = r
    shared = set.intersection(*(set(c) for c in cells.values())) if cells else set()
    base = cells.get((args.against, args.n), {})
    base_tokens = sum(base[i]["tokens"] for i in shared) / max(1, len(shared)) if base else 0
    print(f"# {len(shared)} problems every row ran; against {args.against}@{args.n}")
    # samples: the mean over the rows that voted (auto's hand-overs to a search draw no more)
    print(f"{'row':28} {'N':>3} {'accuracy':>8} {'mean tokens':>11} {'x tokens':>8} {'samples':>7}  stopped by")
    for (s, n), by in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        rs = [by[i] for i in sorted(shared)]
        acc = sum(bool(r["correct"]) for r in rs) / max(1, len(rs))
        tok = sum(r["tokens"] for r in rs) / max(1, len(rs))
        used = [r["samples_used"] for r in rs if r.get("samples_used") is not None]
        stops = defaultdict(int)
        for r in rs:
            if r.get("stopped_by"):
                stops[r["stopped_by"]] += 1
        samples = f"{sum(used) / len(used):7.1f}" if used else f"{'-':>7}"
        ratio = f"{tok / base_tokens:8.2f}" if base_tokens else f"{'-':>8}"
        print(f"{s:28} {n:>3} {acc:>8.1%} {tok:>11.0f} {ratio} {samples}  "
              + ", ".join(f"{k} {v}" for k, v in sorted(stops.items())))
    if args.plot:  # every row on the problems they all ran, as the table above
        plot_svg(summarize([r for r in rows if r["id"] in shared]), args.plot,
                 title=f"{args.out.name}: accuracy vs tokens ({len(shared)} problems)")
        print(f"# plot: {args.plot}")
    print(f"\n# the stop rule's mistakes (the same vote at N={args.n} right, the adaptive one wrong)")
    for (s, n), by in sorted(cells.items()):
        fixed = cells.get((s.split("+")[0], args.n), {})  # majority+adaptive against majority@16
        if "+adaptive" not in s or not fixed:
            continue
        lost = [i for i in sorted(shared) if fixed[i]["correct"] and not by[i]["correct"]]
        gained = [i for i in sorted(shared) if by[i]["correct"] and not fixed[i]["correct"]]
        detail = "; ".join(f"{i} (stopped at {by[i].get('samples_used')} on {by[i]['answer']}, "
                           f"P {by[i].get('posterior')})" for i in lost)
        print(f"{s:28} lost {len(lost)}, gained {len(gained)}" + (f": {detail}" if detail else ""))


if __name__ == "__main__":
    main()
