"""What the TUI runs a search with. The real one loads models through the session, or
connects to a named server (`endpoint:NAME`); tests pass a scripted one. Both run on the
RunController's thread, one run at a time."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tts_tui.backends.openai.client import safe_url
from tts_tui.errors import InputError
from tts_tui.search import events as ev
from tts_tui.search.protocol import SearchParams
from tts_tui.tui import endpoints as ep

Status = Callable[[str], None]


DEFAULT_VERIFIER = "default"  # the probe where one is trained for the model, else confidence


def verifier_options() -> list[tuple[str, str]]:
    """The verifier picker's choices: the model's default first (a PRM needs --prm, so the
    picker leaves it to the command line)."""
    from tts_tui.session import VERIFIERS

    return [("default (probe if trained)", DEFAULT_VERIFIER)] + [(v, v) for v in VERIFIERS if v != "prm"]


@dataclass
class RunRequest:
    problem: str
    strategy: str
    params: SearchParams
    verifier: str = "confidence"
    model: str | None = None


class Runner(Protocol):
    """A runner may also offer `endpoints()` (name -> config) and `health(name)`: the app
    asks with getattr, so a scripted runner without servers lists local models only."""

    def models(self) -> list[tuple[str, bool]]: ...

    def run(self, req: RunRequest, listener: ev.Listener, cancel: threading.Event, status: Status) -> tuple[Any, Any]: ...

    def close(self) -> None: ...


class SolverRunner:
    """Keeps one loaded model (or one server connection); switching unloads the old one first.

    Loading, solving and closing all hold one lock, so a model is never swapped or freed
    while a search decodes on it, whoever calls (the run thread, or the app at exit).
    `extra` endpoints (from `tts tui --base-url`) sit beside the configured ones, unsaved.
    """

    def __init__(self, extra: dict[str, ep.Endpoint] | None = None) -> None:
        self._solver = None
        self._key: str | None = None
        self._lock = threading.Lock()
        self._extra = dict(extra or {})

    def models(self) -> list[tuple[str, bool]]:
        from tts_tui import paths
        from tts_tui.catalog import load_catalog

        mdir = paths.models_dir()
        return [(e.id, e.is_present(mdir)) for e in load_catalog().entries if e.role != "verifier"]

    def endpoints(self) -> dict[str, ep.Endpoint]:
        """Read afresh each time: `tts endpoints add` in another terminal shows on the next look."""
        return {**ep.configured(), **self._extra}

    def health(self, name: str) -> ep.Health:
        e = self.endpoints().get(name)
        return ep.check(name, e) if e is not None else ep.Health("unknown", f"no endpoint named {name!r}")

    def _load(self, model: str | None, status: Status):
        if ep.is_endpoint(model):
            return self._connect(ep.name_of(str(model)), status)
        if self._solver is not None and self._key == (model or ""):
            return self._solver
        self._unload(status)
        return self._load_local(model, status)

    def _unload(self, status: Status) -> None:
        if self._solver is not None:
            if not ep.is_endpoint(self._key):  # a server connection holds nothing here
                status("unloading the previous model")
            self._solver.close()
            self._solver = None
            self._key = None

    def _connect(self, name: str, status: Status):
        e = self.endpoints().get(name)
        if e is None:
            raise InputError(f"no endpoint named {name!r} (tts endpoints list)")
        # Keyed by the config too: an endpoint edited since the last run reconnects.
        key = ep.value(name) + json.dumps(e, sort_keys=True)
        if self._solver is not None and self._key == key:
            return self._solver
        self._unload(status)  # frees a local model's memory: the server does the decoding now
        status(f"connecting to {name} ({safe_url(e['base_url'])})…")
        self._solver = ep.connect(name, e)
        self._key = key
        return self._solver

    def _load_local(self, model: str | None, status: Status):
        from tts_tui.session import Solver

        def on_progress(done: int, total: int, what: str) -> None:
            status(f"downloading {model or 'default model'}: {what} {done / max(total, 1):.0%}")

        status(f"loading {model or 'default model'}…")
        self._solver = Solver(model, on_progress=on_progress)
        self._key = model or ""
        return self._solver

    def run(self, req: RunRequest, listener: ev.Listener, cancel: threading.Event, status: Status):
        with self._lock:
            solver = self._load(req.model, status)
            if req.verifier == DEFAULT_VERIFIER:  # the model's own default, recorded as what ran
                req.verifier = solver.default_verifier()
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
