"""What the TUI costs the search: the same run with and without the app attached.

Runs are interleaved (plain, app, plain, app, ...) on one loaded model, same problem,
strategy and seed, so both see the same machine load. Search throughput is generated
tokens / search wall time. Prints one line per pair and the median ratio:
  pair=1 plain=61.2 app=60.1 app/plain=0.98

`--layer K` loads the model with the `cb_eval` tap on layer K (as a probe on a middle layer
does): llama.cpp then calls into Python at every graph node of every decode, each call
taking the GIL, which the UI thread also wants.

Usage: python bench/tui_overhead.py [--model tiny] [--strategy beam] [--n 8] [--m 4] [--pairs 3] [--layer K]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tts_tui.search.protocol import SearchParams  # noqa: E402
from tts_tui.session import EngineOptions, Solver  # noqa: E402
from tts_tui.tui.app import TTSApp  # noqa: E402
from tts_tui.tui.runner import SolverRunner  # noqa: E402

ui_share: list[float] = []  # the UI thread's CPU time / wall time, per app run
PROBLEM = "A baker makes 24 muffins and sells them in boxes of 4 for $6 a box. How much money does she make?"


def plain(solver: Solver, args: argparse.Namespace) -> float:
    """The same search with no app, in a fresh thread as the app's worker runs it.

    Nothing may decode on the main thread: libgomp keeps one thread team per thread
    that starts parallel work, and a second team (measured) slows every decode by
    20-30% on 2 cores, which would be charged to the UI.
    """
    params = SearchParams(n=args.n, m=args.m, budget=args.budget, seed=1)
    out: list[float] = []

    def run() -> None:
        result, _ = solver.solve(PROBLEM, args.strategy, params, "confidence", listener=lambda e: None)
        out.append(result.tokens / result.seconds)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out[0]


async def with_app(solver: Solver, args: argparse.Namespace) -> float:
    runner = SolverRunner()
    runner._solver, runner._key = solver, args.model  # share the loaded model
    presets = dict(problem=PROBLEM, strategy=args.strategy, n=args.n, m=args.m, budget=args.budget, seed=1,
                   temperature=SearchParams().temperature, model=args.model, verifier="confidence")
    app = TTSApp(runner=runner, presets=presets, remember=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await asyncio.sleep(1.0)  # let the app finish mounting, as a user's would before Run
        c0, w0 = time.thread_time(), time.monotonic()
        await pilot.press("ctrl+r")
        while app.view.result is None:
            await asyncio.sleep(0.1)  # not pilot.pause(): that forces extra refresh cycles
        ui_share.append((time.thread_time() - c0) / (time.monotonic() - w0))
        res = app.view.result
    return res["tokens"] / res["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--strategy", default="beam")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--m", type=int, default=4)
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--layer", type=int, default=None, help="load the model tapping this layer")
    args = ap.parse_args()
    solver = Solver(args.model, options=EngineOptions(hidden_layer=args.layer))
    print(f"# model={solver.model_path.name} layer={solver.engine.hidden_layer}", flush=True)
    plain(solver, args)  # warm up
    ratios = []
    for i in range(1, args.pairs + 1):
        a = plain(solver, args)
        b = asyncio.run(with_app(solver, args))
        ratios.append(b / a)
        print(f"pair={i} plain={a:.1f} app={b:.1f} app/plain={b / a:.3f} ui_thread_cpu={ui_share[-1]:.1%}",
              flush=True)
    print(f"median app/plain={statistics.median(ratios):.3f} (UI cost {1 - statistics.median(ratios):.1%})")
    solver.close()


if __name__ == "__main__":
    main()
