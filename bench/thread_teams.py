"""Why one process must decode from one thread: libgomp keeps an OpenMP team per thread.

The same search (tiny model, beam N=8 M=4, 512 tokens), in tokens/s: on the main
thread and in a second thread of the same process, interleaved (the main thread's team
exists for both); then, in a child process that never decodes on its main thread, in a
fresh thread per run. The second column is what an app pays if two threads decode.

Usage: python bench/thread_teams.py [--model tiny] [--runs 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROBLEM = "A baker makes 24 muffins and sells them in boxes of 4 for $6 a box. How much money does she make?"


def rate(solver) -> float:
    from tts_tui.search.protocol import SearchParams

    result, _ = solver.solve(PROBLEM, "beam", SearchParams(n=8, m=4, budget=512, seed=1), "confidence",
                             listener=lambda e: None)
    return result.tokens / result.seconds


def in_thread(solver) -> float:
    out: list[float] = []
    t = threading.Thread(target=lambda: out.append(rate(solver)))
    t.start()
    t.join()
    return out[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from tts_tui.session import Solver

    solver = Solver(args.model)
    if args.threads_only:  # child: never decode on the main thread
        in_thread(solver)
        print(" ".join(f"{in_thread(solver):.1f}" for _ in range(args.runs)))
        return
    rate(solver)  # warm up (creates the main thread's team)
    for i in range(args.runs):
        print(f"run={i + 1} main={rate(solver):.1f} other_thread={in_thread(solver):.1f}", flush=True)
    solver.close()
    child = subprocess.run([sys.executable, __file__, "--model", args.model, "--runs", str(args.runs),
                            "--threads-only"], capture_output=True, text=True, check=False)
    print(f"threads only, no main-thread decoding (child process): {child.stdout.strip()}")


if __name__ == "__main__":
    main()
