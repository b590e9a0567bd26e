"""Compare: two strategies (or two settings) on the same problem and budget, side by side.

Run A is what the main controls say; run B starts as a copy with another strategy and
is edited here. Both run through the app's one RunController, A then B as one run (one
model, one engine, one thread), each into its own view; a row of figures per run sits
underneath. The screen is its own RunHost: status, errors and figures stay here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, Select, Static

from tts_tui.errors import TTSError
from tts_tui.search.protocol import SearchParams
from tts_tui.search.strategies import ADAPTIVE, STRATEGIES, validate
from tts_tui.session import VERIFIERS
from tts_tui.tui.controller import RunController
from tts_tui.tui.lanes import Lane, start_runs
from tts_tui.tui.runner import DEFAULT_VERIFIER, RunRequest, verifier_options
from tts_tui.tui.search_view import SearchView
from tts_tui.tui.view import figures_table
from tts_tui.tui.widgets import NumberInput, Panel


def default_b(a: RunRequest) -> RunRequest:
    """B differs from A in strategy: a vote against a tree search, by default."""
    strategy = "majority" if a.strategy != "majority" else "beam"
    return replace(a, strategy=strategy, params=_params_for(strategy, a.params))


def _params_for(strategy: str, params: SearchParams, **changes: Any) -> SearchParams:
    """A's knobs for B: A's adaptive setting carries over to a vote only (a tree search
    has no waves, and would be refused for it)."""
    adaptive = params.adaptive if strategy in ADAPTIVE else None
    return replace(params, adaptive=adaptive, **changes)


COMPARE_CSS = """
CompareScreen #b-controls { height: 3; padding: 0 1; }
CompareScreen #b-controls Input { width: 9; }
CompareScreen #b-controls Select { width: 1fr; }
CompareScreen #b-controls #b-verifier { width: 22; }
CompareScreen #b-controls Label { padding: 1 1 0 0; }
CompareScreen #cmp-errors { color: $error; height: auto; padding: 0 1; }
CompareScreen #cmp-status { color: $text-muted; height: 1; padding: 0 1; }
CompareScreen #views { height: 1fr; }
CompareScreen SearchView { width: 1fr; border: solid $primary; }
CompareScreen SearchView #main { layout: vertical; }
CompareScreen SearchView #center { height: 1fr; }
CompareScreen SearchView #detail-scroll { display: none; }
CompareScreen SearchView #side { width: 1fr; height: auto; border-left: none; border-top: solid $primary; }
CompareScreen SearchView #best { height: 1; }
CompareScreen SearchView #answers { height: 5; }
CompareScreen SearchView #compute { height: 4; }
CompareScreen #figures { height: 4; padding: 0 1; border-top: solid $primary; }
"""  # appended to the app's CSS: a screen's DEFAULT_CSS loses to the app's own rules


class CompareScreen(Screen):
    BINDINGS = [
        Binding("ctrl+r", "run", "Run A, B", priority=True),
        Binding("escape", "back", "Stop / Back"),
    ]

    def __init__(self, a: RunRequest, controller: RunController[Lane]) -> None:
        super().__init__()
        self.a = a
        self.b = default_b(a)
        self.controller = controller
        self.labels = {"cmp-a": "A", "cmp-b": "B"}
        self.requests: dict[str, RunRequest] = {}
        self.last_error = ""

    def compose(self) -> ComposeResult:
        b, p = self.b, self.b.params
        yield Header()
        with Horizontal(id="b-controls"):
            yield Label(f"A: {self.a.strategy} N={self.a.params.n} M={self.a.params.m} "
                        f"T={self.a.params.temperature:g}   B:")
            yield Select([(f"{k}: {v[1]}", k) for k, v in STRATEGIES.items()], value=b.strategy,
                         allow_blank=False, id="b-strategy")
            yield Label("N")
            yield NumberInput(p.n, 1, "N", id="b-n")
            yield Label("M")
            yield NumberInput(p.m, 1, "M", id="b-m")
            yield Label("T")
            yield NumberInput(p.temperature, 0.1, "temp", is_float=True, id="b-temperature")
            yield Select(verifier_options(), value=b.verifier if b.verifier in VERIFIERS and b.verifier != "prm"
                         else DEFAULT_VERIFIER, allow_blank=False, id="b-verifier")
        yield Static("", id="cmp-errors", markup=False)  # error text may quote the problem: not markup
        yield Static(f"same problem and budget ({self.a.params.budget} tokens); ctrl+r runs A then B, "
                     "escape stops or goes back", id="cmp-status", markup=False)
        with Horizontal(id="views"):
            rates = getattr(self.app, "show_rates", True)
            yield SearchView(id="cmp-a", show_rates=rates)
            yield SearchView(id="cmp-b", show_rates=rates)
        yield Panel(figures_table([]), id="figures")
        yield Footer()

    def on_mount(self) -> None:
        for vid, label in self.labels.items():
            self.query_one(f"#{vid}", SearchView).border_title = label

    def read_b(self) -> tuple[RunRequest | None, str]:
        q = self.query_one
        try:
            n = int(q("#b-n", Input).value or 0)
            m = int(q("#b-m", Input).value or 0)
            temperature = float(q("#b-temperature", Input).value or 0)
        except ValueError:
            return None, "B: N and M are whole numbers; temperature a number"
        strategy = str(q("#b-strategy", Select).value)
        params = _params_for(strategy, self.a.params, n=n, m=m, temperature=temperature)
        try:
            validate(strategy, params)
        except TTSError as exc:
            return None, f"B: {exc}"
        return replace(self.a, strategy=strategy, params=params, verifier=str(q("#b-verifier", Select).value)), ""

    @on(Input.Changed)
    @on(Select.Changed)
    def _validate_inline(self, message: Input.Changed | Select.Changed) -> None:
        message.stop()  # B's controls are this screen's business, not the main controls'
        if self.is_mounted:
            self.query_one("#cmp-errors", Static).update(self.read_b()[1])

    def views(self) -> list[SearchView]:
        return [self.query_one("#cmp-a", SearchView), self.query_one("#cmp-b", SearchView)]

    @property
    def running(self) -> bool:
        return any(v.running for v in self.views())

    def action_run(self) -> None:
        b, why = self.read_b()
        if b is None:
            self.query_one("#cmp-errors", Static).update(why)
            self.last_error = why
            return
        self.b = b
        va, vb = self.views()
        self.requests = {"cmp-a": self.a, "cmp-b": b}
        start_runs(self.controller, [(va, self.a), (vb, b)], self)
        self.update_figures()

    def action_back(self) -> None:
        if self.running:
            if self.controller.stop():
                self.set_status("stopping…")
        else:
            self.app.pop_screen()

    # -- RunHost: where this screen's runs show ---------------------------------------------
    def set_status(self, text: str) -> None:
        self.query_one("#cmp-status", Static).update(text)

    def show_error(self, text: str) -> None:
        self.set_status("error: " + text)
        self.last_error = text

    def show_record(self, view: SearchView, record: dict[str, Any]) -> None:
        self.update_figures()

    def run_updated(self) -> None:
        self.update_figures()

    def figures(self) -> list[dict[str, Any]]:
        rows = []
        for view in self.views():
            req = self.requests.get(view.id or "")
            if req is None:
                continue
            rows.append({"run": self.labels[view.id or ""], "strategy": req.strategy, "n": req.params.n,
                         "m": req.params.m, "temperature": req.params.temperature, "verifier": req.verifier,
                         "budget": req.params.budget, **view.figures()})
        return rows

    def update_figures(self) -> None:
        rows = self.figures()
        if not getattr(self.app, "show_rates", True):  # timings off (snapshot tests)
            rows = [{**r, "seconds": None} for r in rows]
        self.query_one("#figures", Panel).update(figures_table(rows))
