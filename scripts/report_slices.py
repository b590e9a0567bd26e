"""Write the ids of the report slices (never trained or tuned on), one per line.

    python scripts/report_slices.py > eval-out/report-ids.txt

Problems 1-60 of gsm8k_dev and the first 30 of math_dev at levels 1-3 (issues #16, #17).
"""

from __future__ import annotations

from pathlib import Path

from tts_tui.evaluate import load_problems

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

if __name__ == "__main__":
    for p in load_problems(DATA / "gsm8k_dev.jsonl", 60) + load_problems(DATA / "math_dev.jsonl", 30, {1, 2, 3}):
        print(p.id)
