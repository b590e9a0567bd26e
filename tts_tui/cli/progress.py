"""Live progress on stderr, driven by the search's event stream; stdout stays for results."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.text import Text

from tts_tui.search import events as ev
from tts_tui.search.stopping import stop_line

err = Console(stderr=True)


@contextmanager
def download_progress() -> Iterator:
    """A progress bar for model downloads; yields an on_progress(done, total, what)."""
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        console=err, transient=True,
    ) as bar:
        task = bar.add_task("model", total=None)

        def on_progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        yield on_progress


class SearchProgress:
    """Tokens against budget, branches live/pruned/finished, best answer, tok/s."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.spent = 0
        self.status: dict[int, str] = {}
        self.best = "-"
        self.t0 = time.monotonic()
        self.info = ""
        self.live = Live(self._render(), console=err, refresh_per_second=8, transient=True)

    def __enter__(self) -> SearchProgress:
        if err.is_terminal:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if err.is_terminal:
            self.live.__exit__(None, None, None)

    def __call__(self, e: ev.Event) -> None:
        if e.kind == ev.NODE_ADDED:
            node = e.data["node"]
            self.spent += len(node["tokens"])
            self.status[node["id"]] = node["status"]
        elif e.kind == ev.NODE_STATUS and e.node_id is not None:
            self.status[e.node_id] = e.data["status"]
        elif e.kind == ev.VOTES and e.data["groups"]:
            g = e.data["groups"][0]
            self.best = f"{g['answer']} ({g['count']} votes)"
        elif e.kind == ev.STOP_RULE:
            d = e.data
            err.print(f"samples {d['samples_used']}/{d['n_max']}: {stop_line(d)}"
                      + (f"; {d['cut']} cut" if d.get("cut") else ""), style="dim", markup=False)
        elif e.kind == ev.INFO:
            self.info = e.data["text"]
            err.print(f"[dim]{self.info}[/dim]")
        if err.is_terminal:
            self.live.update(self._render())

    def _render(self) -> Text:
        counts = {s: 0 for s in ("live", "pruned", "finished", "chosen")}
        for s in self.status.values():
            counts[s] = counts.get(s, 0) + 1
        dt = max(1e-6, time.monotonic() - self.t0)
        return Text(
            f"tokens {self.spent}/{self.budget}  live {counts['live']}  pruned {counts['pruned']}  "
            f"finished {counts['finished'] + counts['chosen']}  best {self.best}  {self.spent / dt:.1f} tok/s"
        )
