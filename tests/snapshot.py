"""Screen snapshots: the app's SVG screenshot, compared by the text on screen.

The reference SVGs live in tests/snapshots/ (open one to see the screen). Comparing
the text cell by cell, not the SVG markup, keeps the test about what a user reads
rather than about Textual's exact colours. `TTS_UPDATE_SNAPSHOTS=1 pytest` rewrites
them after an intended change.
"""

from __future__ import annotations

import html
import os
import re
from collections import defaultdict
from pathlib import Path

DIR = Path(__file__).resolve().parent / "snapshots"
CELL = 12.2  # Textual's SVG cell width
_TEXT = re.compile(r'<text class="[^"]*-r\d+" x="([\d.]+)" y="[\d.]+" textLength="[\d.]+" '
                   r'clip-path="url\(#[\w-]+-line-(\d+)\)">(.*?)</text>')


def screen_text(svg: str, masks: tuple[str, ...] = ()) -> str:
    """The characters on screen, one line per terminal row, right-trimmed; `masks` are
    regexes whose matches become '***' (timestamps, temporary paths): one fixed token,
    since a path's length changes from run to run (pytest-99 then pytest-100)."""
    rows: dict[int, dict[int, str]] = defaultdict(dict)
    for x, line, text in _TEXT.findall(svg):
        col = round(float(x) / CELL)
        for i, ch in enumerate(html.unescape(text).replace("\xa0", " ")):
            rows[int(line)][col + i] = ch
    out = []
    for r in range(max(rows) + 1 if rows else 0):
        cells = rows.get(r, {})
        line = "".join(cells.get(c, " ") for c in range(max(cells) + 1 if cells else 0)).rstrip()
        for m in masks:
            line = re.sub(m, "***", line)
        out.append(line)
    return "\n".join(out)


def check(name: str, svg: str, masks: tuple[str, ...] = ()) -> None:
    ref = DIR / f"{name}.svg"
    if os.environ.get("TTS_UPDATE_SNAPSHOTS") or not ref.is_file():
        DIR.mkdir(exist_ok=True)
        ref.write_text(svg, encoding="utf-8")
        if not os.environ.get("TTS_UPDATE_SNAPSHOTS"):
            raise AssertionError(f"no reference snapshot: wrote {ref}; check it and commit it")
        return
    want = screen_text(ref.read_text(encoding="utf-8"), masks)
    got = screen_text(svg, masks)
    if want != got:
        import difflib

        diff = "\n".join(list(difflib.unified_diff(want.splitlines(), got.splitlines(), "snapshot", "now",
                                                   lineterm=""))[:40])
        raise AssertionError(f"{name} differs from tests/snapshots/{name}.svg:\n{diff}")
