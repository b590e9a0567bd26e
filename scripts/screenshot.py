"""Drive the TUI headless on a real model and save an SVG screenshot for the README.

Usage: python scripts/screenshot.py [--model ID] [--strategy beam] [--n 4] [--m 2] [--out docs/tui.svg]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tts_tui.tui.app import TTSApp  # noqa: E402

PROBLEM = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
           "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 "
           "per fresh duck egg. How much in dollars does she make every day at the farmers' market?")


async def shoot(args: argparse.Namespace) -> None:
    presets = dict(problem=PROBLEM, strategy=args.strategy, n=args.n, m=args.m, budget=args.budget,
                   model=args.model, verifier=args.verifier, seed=0)
    app = TTSApp(presets=presets, remember=False)
    async with app.run_test(size=(180, 50)) as pilot:
        await pilot.press("ctrl+r")
        while app.view.running or app.record is None:
            await pilot.pause(0.5)
        await pilot.pause(1.0)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(app.export_screenshot(title="tts-tui"), encoding="utf-8")
        answer = app.view.result["answer"]
    app.runner.close()
    print(f"saved {args.out}: answer {answer}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct-q4_k_m")
    ap.add_argument("--strategy", default="beam")
    ap.add_argument("--verifier", default="confidence")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--m", type=int, default=2)
    ap.add_argument("--budget", type=int, default=2048)
    ap.add_argument("--out", default="docs/tui.svg")
    asyncio.run(shoot(ap.parse_args()))


if __name__ == "__main__":
    main()
