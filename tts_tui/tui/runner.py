"""What the TUI runs a search with. The real one loads models through the session;
tests pass a scripted one. Both run on the RunController's thread, one run at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tts_tui.search import events as ev
from tts_tui.search.protocol import SearchParams

Status = Callable[[str], None]


@dataclass
class RunRequest:
    problem: str
    strategy: str
    params: SearchParams
    verifier: str = "confidence"
    model: str | None = None


class Runner(Protocol):
    def models(self) -> list[tuple[str, bool]]: ...

    def run(self, req: RunRequest, listener: ev.Listener, cancel: threading.Event, status: Status) -> tuple[Any, Any]: ...

    def close(self) -> None: ...


class SolverRunner:
    """Keeps one loaded model; switching model unloads the old one first.

    Loading, solving and closing all hold one lock, so a model is never swapped or freed
    while a search decodes on it, whoever calls (the run thread, or the app at exit).
    """

    def __init__(self) -> None:
        self._solver = None
        self._key: str | None = None
        self._lock = threading.Lock()

    def models(self) -> list[tuple[str, bool]]:
        from tts_tui import paths
        from tts_tui.catalog import load_catalog

        mdir = paths.models_dir()
        return [(e.id, e.is_present(mdir)) for e in load_catalog().entries if e.role != "verifier"]

    def _load(self, model: str | None, status: Status):
        from tts_tui.session import Solver

        if self._solver is not None and self._key == (model or ""):
            return self._solver
        if self._solver is not None:
            status("unloading the previous model")
            self._solver.close()
            self._solver = None

        def on_progress(done: int, total: int, what: str) -> None:
            status(f"downloading {model or 'default model'}: {what} {done / max(total, 1):.0%}")

        status(f"loading {model or 'default model'}…")
        self._solver = Solver(model, on_progress=on_progress)
        self._key = model or ""
        return self._solver

    def run(self, req: RunRequest, listener: ev.Listener, cancel: threading.Event, status: Status):
        with self._lock:
            solver = self._load(req.model, status)
            status(f"running {req.strategy} on {solver.model_path.name}")
            return solver.solve(req.problem, req.strategy, req.params, req.verifier, listener=listener,
                                cancel=cancel)

    def model_name(self) -> str:
        return self._solver.model_path.name if self._solver else ""

    def close(self) -> None:
        with self._lock:  # waits for a run still decoding (it was cancelled: within one step)
            if self._solver is not None:
                self._solver.close()
                self._solver = None
