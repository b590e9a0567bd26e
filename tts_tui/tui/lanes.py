"""Where a run's events go: a lane is one view and the screen that hosts it.

The main screen and the compare screen both start runs through the one RunController;
the app drains the controller and hands each event to its lane. A host only has to say
how it shows a status line, an error, a finished record and fresh figures, so the app
needs to know nothing about which screen started a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from textual.app import App

from tts_tui.search import events as ev
from tts_tui.tui.controller import ERROR, FINISHED, RECORD, STATUS, RunController
from tts_tui.tui.runner import RunRequest
from tts_tui.tui.search_view import SearchView


class RunHost(Protocol):
    """A screen that shows runs: its status line, error line and per-run figures."""

    def set_status(self, text: str) -> None: ...

    def show_error(self, text: str) -> None: ...

    def show_record(self, view: SearchView, record: dict[str, Any]) -> None: ...

    def run_updated(self) -> None: ...


@dataclass(frozen=True)
class Lane:
    view: SearchView
    host: RunHost


def start_runs(controller: RunController[Lane], jobs: Sequence[tuple[SearchView, RunRequest]],
               host: RunHost) -> int:
    """Clear the views and start the jobs, one after another, as one run (any run going is stopped)."""
    for view, req in jobs:
        view.reset(req.problem, req.params.budget)
        view.running = True
        view.follow = True
    return controller.start([(Lane(view, host), req) for view, req in jobs])


def deliver(app: App, items: list[tuple[Lane, ev.Event]]) -> None:
    """Apply drained events (the current run's only) to their views, one batch per view."""
    batches: dict[Lane, list[ev.Event]] = {}
    for lane, e in items:
        view = lane.view
        if not view.is_mounted:
            continue  # its screen was closed
        batch = batches.setdefault(lane, [])
        if e.kind == STATUS:
            lane.host.set_status(e.data["text"])
        elif e.kind == ERROR:
            lane.host.show_error(e.data["text"])
        elif e.kind == RECORD:
            view.record = e.data["record"]
            lane.host.show_record(view, view.record)
        elif e.kind == FINISHED:
            _apply(app, view, batch)
            batch.clear()
            view.finish()
        else:
            batch.append(e)
    for lane, batch in batches.items():
        _apply(app, lane.view, batch)
        lane.host.run_updated()


def _apply(app: App, view: SearchView, batch: list[ev.Event]) -> None:
    if batch:
        with app.batch_update():
            view.apply(batch)
