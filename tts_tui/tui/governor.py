"""Keeps the UI's own CPU use small while a search runs.

On a laptop the search's decode threads use every core, and llama.cpp's threads meet
at a barrier after each operation: when the UI thread takes a core for a moment, the
whole decode waits. Measured on 2 cores, the UI's CPU share cost the search 2-3x as
much throughput. So the UI measures its own thread's CPU time and, after each frame,
waits long enough that its share stays under a target: cheap frames (panels) come at up
to 10 a second, costly ones (a big tree repaint) less often.
"""

from __future__ import annotations

import time

UI_CPU_SHARE = 0.02  # of one core
MIN_FRAME_S = 0.1
MAX_FRAME_S = 1.0


class FrameGovernor:
    def __init__(self, share: float = UI_CPU_SHARE, min_s: float = MIN_FRAME_S, max_s: float = MAX_FRAME_S) -> None:
        self.share, self.min_s, self.max_s = share, min_s, max_s
        self.next_at = 0.0
        self._cpu = time.thread_time()

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.next_at

    def frame_done(self, now: float | None = None) -> float:
        """Call on the UI thread after a frame's work; returns the wait before the next.

        The CPU counted is everything this thread did since the last frame (the
        previous frame's rendering and any key handling included).
        """
        now = time.monotonic() if now is None else now
        cpu = time.thread_time()
        used, self._cpu = cpu - self._cpu, cpu
        wait = min(self.max_s, max(self.min_s, used / self.share))
        self.next_at = now + wait
        return wait
