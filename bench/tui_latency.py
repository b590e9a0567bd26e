"""How fast the TUI answers: stop, quit and a key press, on the scripted fake generator.

The tests only hold these to generous bounds (a loaded 2-core CI machine stalls any
process for a while); this measures the tight figures, with what they depend on:
  stop:  Escape mid-run until the run is shown finished, in fake steps (each step
         sleeps --delay seconds; the search checks its cancel flag between steps)
  quit:  Ctrl+Q mid-run until the worker's search has returned
  key:   one cursor move in a tree of 300 nodes, until the app is idle again
One line per run (seconds; stop also in fake steps), then the medians:
  run=<i> stop=<s> steps=<stop / delay> quit=<s> key=<median of five presses>
  median stop=<s> (<k> steps of <delay>s) quit=<s> key=<s> (best <s>)

Usage: python bench/tui_latency.py [--runs 5] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the scripted fake runner the TUI tests use

from fakes import FakeRunner  # noqa: E402

from tts_tui.tui.app import TTSApp  # noqa: E402

SIZE = (160, 48)


def make_app(delay: float, **presets) -> TTSApp:
    presets = {"problem": "What is 6*7?", "strategy": "majority", "n": 16, "m": 2, "model": "fake-model", **presets}
    return TTSApp(runner=FakeRunner(delay), presets=presets, show_rates=False, remember=False)


async def wait_done(pilot, app, timeout: float = 30.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        await pilot.pause(0.01)
        if not app.view.running and app.record is not None:
            return
    raise RuntimeError("the run did not finish")


async def stop_latency(delay: float) -> float:
    app = make_app(delay)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await pilot.pause(0.3)
        t0 = time.monotonic()
        await pilot.press("escape")
        await wait_done(pilot, app)
        return time.monotonic() - t0


async def quit_latency(delay: float) -> float:
    app = make_app(delay)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await pilot.pause(0.3)
        quit_at = time.monotonic()  # from the key press, not from when press() returns
        await pilot.press("ctrl+q")
    t0 = time.monotonic()
    while not hasattr(app.runner, "finished_at") and time.monotonic() - t0 < 10:
        await asyncio.sleep(0.005)
    return app.runner.finished_at - quit_at


async def key_latency(presses: int = 5) -> list[float]:
    app = make_app(0.0, n=100)  # 100 chains x 3 steps = 300 nodes
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_done(pilot, app, timeout=60)
        pilot.app.query_one("#tree").focus()
        await pilot.pause()
        took = []
        for _ in range(presses):
            t0 = time.perf_counter()
            await pilot.press("down")  # returns once the key is handled and the app is idle
            took.append(time.perf_counter() - t0)
            await pilot.pause(0.15)  # let the debounced detail pane settle between presses
        return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--delay", type=float, default=0.05, help="seconds per fake step")
    args = ap.parse_args()
    stops, quits, keys = [], [], []
    for i in range(1, args.runs + 1):
        stops.append(asyncio.run(stop_latency(args.delay)))
        quits.append(asyncio.run(quit_latency(args.delay)))
        keys.extend(asyncio.run(key_latency()))
        print(f"run={i} stop={stops[-1]:.3f}s steps={stops[-1] / args.delay:.1f} quit={quits[-1]:.3f}s "
              f"key={statistics.median(keys[-5:]):.3f}s", flush=True)
    stop = statistics.median(stops)
    print(f"median stop={stop:.3f}s ({stop / args.delay:.1f} steps of {args.delay}s) "
          f"quit={statistics.median(quits):.3f}s key={statistics.median(keys):.3f}s (best {min(keys):.3f}s)")


if __name__ == "__main__":
    main()
