"""The TUI: controls on the left, the live tree in the middle, answers and compute on the right.

The search runs on the RunController's one thread (controller.py): one run at a time, a
new one waits for the old one to end. Its listener only appends events to a queue; a
timer drains the current run's events and applies them in one batch update, at most 10
times a second and less when frames are costly (see governor.py), so a fast search never
floods the screen and the UI takes little from the search.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Header, Input, Label, Select, Static, TextArea, Tree

from tts_tui import paths
from tts_tui.errors import TTSError
from tts_tui.runlog import load_run, markdown_report
from tts_tui.search import events as ev
from tts_tui.search.protocol import AdaptiveParams, SearchParams
from tts_tui.search.strategies import ADAPTIVE, STRATEGIES, validate
from tts_tui.session import VERIFIERS
from tts_tui.tui import endpoints as ep
from tts_tui.tui.compare import COMPARE_CSS, CompareScreen
from tts_tui.tui.controller import RunController
from tts_tui.tui.governor import FrameGovernor
from tts_tui.tui.history import HistoryScreen
from tts_tui.tui.lanes import Lane, deliver, start_runs
from tts_tui.tui.runner import DEFAULT_VERIFIER, RunRequest, Runner, SolverRunner, verifier_options
from tts_tui.tui.search_view import SearchView
from tts_tui.tui.settings import Settings, load_settings, save_settings
from tts_tui.tui.widgets import NumberInput

TICK_S = 0.05  # how often the drain timer looks; the governor decides when to draw
# Keys for the main screen only: another screen that runs things (compare) binds its own.
MAIN_ONLY = {"run", "stop", "follow", "history", "export", "compare", "timeline"}


def adaptive_tip(knobs: AdaptiveParams | None = None) -> str:
    """The adaptive box's tooltip, with the knobs it runs (`tts tui --stop-at ...`)."""
    k = knobs or AdaptiveParams()
    cut = f"; traces below the first wave's confidence floor are cut ({k.window}-token window)" if k.cut else ""
    return (f"{', '.join(ADAPTIVE)}: sample in waves of {k.wave} and stop once P(leader holds) >= {k.stop_at}; "
            f"N is then the most samples drawn{cut}")


def adaptive_params(strategy: str, on: bool, knobs: AdaptiveParams | None = None) -> AdaptiveParams | None:
    """The adaptive knobs (`tts tui --stop-at/--wave/--cut...`, else the defaults) when the
    box is ticked and the strategy votes in waves; the box stays ticked across strategies,
    so a beam run is not refused for it."""
    return (knobs or AdaptiveParams()) if on and strategy in ADAPTIVE else None


class TTSApp(App):
    TITLE = "tts-tui"
    SUB_TITLE = "test-time scaling, live"
    CSS = """
    #controls { width: 38; padding: 0 1; border-right: solid $primary; }
    #controls Input, #controls Select { margin: 0; }
    #problem { height: 8; }
    .row { height: auto; }
    .row Input { width: 1fr; }
    #errors { color: $error; height: auto; }
    #status { color: $text-muted; height: auto; }
    #center { width: 1fr; }
    #tree { height: 2fr; }
    #detail-scroll { height: 1fr; border-top: solid $primary; }
    #side { width: 44; padding: 0 1; border-left: solid $primary; }
    .title { text-style: bold; margin-top: 1; }
    #answers { height: 9; }
    #best { height: 1; }
    #p-right { height: 1; }
    #stop-rule { height: 2; }
    #compute { height: 9; }
    #timeline { height: auto; color: $accent; }
    """ + COMPARE_CSS
    BINDINGS = [
        Binding("ctrl+r", "run", "Run", priority=True),
        Binding("escape", "stop", "Stop", priority=True),
        Binding("ctrl+f", "follow", "Follow"),
        Binding("ctrl+o", "history", "History"),
        Binding("ctrl+e", "export", "Export"),
        Binding("ctrl+k", "compare", "Compare"),
        Binding("ctrl+left", "timeline(-1)", "Step back", show=False),
        Binding("ctrl+right", "timeline(1)", "Step fwd", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, runner: Runner | None = None, presets: dict[str, Any] | None = None,
                 show_rates: bool = True, remember: bool = True) -> None:
        super().__init__()
        self.controller: RunController[Lane] = RunController(runner or SolverRunner())
        s = load_settings() if remember else Settings()
        for k, v in (presets or {}).items():
            if v is not None and hasattr(s, k):
                setattr(s, k, v)
        self.settings = s
        self.problem_given = bool((presets or {}).get("problem"))  # on the command line
        self.adaptive_knobs: AdaptiveParams | None = (presets or {}).get("adaptive_knobs")
        self.show_rates = show_rates
        self.remember = remember
        self.record: dict[str, Any] | None = None
        self.replay: list[ev.Event] | None = None
        self.replay_pos = 0
        self.last_error = ""
        self._view: SearchView | None = None
        self.governor = FrameGovernor()
        self.health: dict[str, ep.Health] = {}  # each endpoint's last probe (CHECKING while one runs)
        self._probed: deque[tuple[str, ep.Health]] = deque()  # results from the probe threads

    @property
    def runner(self) -> Runner:
        return self.controller.runner

    # -- layout --------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        s = self.settings
        yield Header()
        with Horizontal():
            with VerticalScroll(id="controls"):
                yield Label("Problem")
                yield TextArea(s.problem, id="problem")
                yield Label("Strategy")
                yield Select([(f"{k}: {v[1]}", k) for k, v in STRATEGIES.items()], value=s.strategy,
                             allow_blank=False, id="strategy")
                yield Checkbox("adaptive: stop when decided", s.adaptive, id="adaptive",
                               disabled=s.strategy not in ADAPTIVE, tooltip=adaptive_tip(self.adaptive_knobs), compact=True)
                with Horizontal(classes="row"):
                    yield NumberInput(s.n, 1, "N", id="n", tooltip="N: total generations / beams")
                    yield NumberInput(s.m, 1, "M", id="m", tooltip="M: expansions per kept beam (N/M kept)")
                with Horizontal(classes="row"):
                    yield NumberInput(s.budget, 256, "budget", id="budget", tooltip="token budget (hard cap)")
                    yield NumberInput(s.temperature, 0.1, "temp", is_float=True, id="temperature",
                                      tooltip="temperature")
                    yield NumberInput(s.seed, 1, "seed", id="seed", tooltip="seed")
                yield Label("+/- step the focused number", classes="hint")
                yield Label("Model")
                yield Select(self._model_options(), value=s.model, allow_blank=True, id="model")
                yield Label("Verifier")
                yield Select(verifier_options(), value=s.verifier if s.verifier in VERIFIERS and s.verifier != "prm"
                             else DEFAULT_VERIFIER, allow_blank=False, id="verifier")
                yield Static("", id="errors", markup=False)  # problem text and answers are not markup
                with Horizontal(classes="row"):
                    yield Button("Run", id="run", variant="primary")
                    yield Button("Stop", id="stop", variant="error")
                yield Static("", id="status", markup=False)
                yield Static("", id="timeline", markup=False)
            yield SearchView(id="view", show_rates=self.show_rates)
        yield Footer()

    def _model_options(self) -> list[tuple[str, str]]:
        try:
            models = self.runner.models()
        except TTSError:
            models = []
        opts = [(f"{mid} ({'present' if ok else 'absent: will download'})", mid) for mid, ok in models]
        opts += [(f"{ep.value(name)} ({self.health.get(name, ep.CHECKING).label})", ep.value(name))
                 for name in self._endpoint_names()]
        if self.settings.model and self.settings.model not in [v for _, v in opts]:
            opts.append((self.settings.model, self.settings.model))
        return opts

    def _endpoint_names(self) -> list[str]:
        """Named servers the runner can use (a scripted runner has none)."""
        listed = getattr(self.runner, "endpoints", None)
        return sorted(listed()) if listed is not None else []

    def on_mount(self) -> None:
        self.set_interval(TICK_S, self._drain)
        self._probe(self._endpoint_names())
        # A user who types first types a problem; with one given, Enter runs it.
        self.query_one("#run" if self.problem_given else "#problem").focus()

    @property
    def view(self) -> SearchView:
        if self._view is None:
            self._view = self.query_one("#view", SearchView)
        return self._view

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if screen is not self.default_screen:
            return  # these act on the main screen (as their keys do)
        yield SystemCommand("Run", "Run the search with the current settings (ctrl+r)", self.action_run)
        yield SystemCommand("Stop", "Stop the running search (escape)", self.action_stop)
        yield SystemCommand("Follow", "Follow the newest activity in the tree (ctrl+f)", self.action_follow)
        yield SystemCommand("History", "Browse and replay saved runs (ctrl+o)", self.action_history)
        yield SystemCommand("Export", "Export this run as JSON and Markdown (ctrl+e)", self.action_export)
        yield SystemCommand("Compare", "Run two strategies on this problem and budget side by side (ctrl+k)",
                            self.action_compare)

    # -- settings from the controls ----------------------------------------------------
    def read_controls(self) -> tuple[RunRequest | None, str]:
        """The run the controls describe, or None and a one-line reason."""
        q = self.query_one
        problem = q("#problem", TextArea).text.strip()
        strategy = q("#strategy", Select).value
        try:
            n = int(q("#n", Input).value or 0)
            m = int(q("#m", Input).value or 0)
            budget = int(q("#budget", Input).value or 0)
            temperature = float(q("#temperature", Input).value or 0)
            seed = int(q("#seed", Input).value or 0)
        except ValueError:
            return None, "N, M, budget and seed are whole numbers; temperature a number"
        if not problem:
            return None, "type a problem first"
        model = q("#model", Select).value
        model = None if model is Select.NULL else str(model)
        verifier = str(q("#verifier", Select).value)
        adaptive = q("#adaptive", Checkbox).value
        params = SearchParams(n=n, m=m, budget=budget, temperature=temperature, seed=seed,
                              adaptive=adaptive_params(str(strategy), adaptive, self.adaptive_knobs))
        try:
            validate(str(strategy), params)
        except TTSError as exc:
            return None, str(exc)
        self.settings = Settings(problem, str(strategy), n, m, budget, temperature, seed, model or "", verifier,
                                 adaptive)
        return RunRequest(problem, str(strategy), params, verifier, model), ""

    @on(Select.Changed, "#strategy")
    def _adaptive_applies(self) -> None:
        # Only the votes sample in waves: for the others the box is off limits, not ignored.
        self.query_one("#adaptive", Checkbox).disabled = self.query_one("#strategy", Select).value not in ADAPTIVE

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _validate_inline(self) -> None:
        if not self.is_mounted:
            return
        req, why = self.read_controls()
        if why == "type a problem first":
            why = ""
        self.query_one("#errors", Static).update(why)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not self.is_mounted:
            return True
        if action in MAIN_ONLY and self.screen is not self.default_screen:
            return False  # the key goes on to the screen on top (compare binds its own run and stop)
        # Escape stops a run; when nothing runs it goes on to the widgets (closing a picker...).
        if action == "stop":
            return self.controller.running
        return True

    # -- actions ---------------------------------------------------------------------------
    @on(Button.Pressed, "#run")
    def action_run(self) -> None:
        req, why = self.read_controls()
        if req is None:
            self._refuse(why)
            return
        self.query_one("#errors", Static).update("")
        self.replay = None
        self.record = None  # until this run's own record arrives
        self.query_one("#timeline", Static).update("")
        if self.remember:
            save_settings(self.settings)
        start_runs(self.controller, [(self.view, req)], self)

    def action_compare(self) -> None:
        req, why = self.read_controls()
        if req is None:
            self._refuse(why)
            self.notify(f"compare needs valid settings: {why}", severity="warning", markup=False)
            return
        self.push_screen(CompareScreen(req, self.controller))

    def _refuse(self, why: str) -> None:
        """Invalid controls: the reason goes under them, and nothing runs."""
        self.query_one("#errors", Static).update(why)
        self.last_error = why

    @on(Button.Pressed, "#stop")
    def action_stop(self) -> None:
        if self.controller.stop():
            self.set_status("stopping…")

    @property
    def running(self) -> bool:
        return self.controller.running

    def action_follow(self) -> None:
        self.view.follow = True
        tree = self.query_one("#tree", Tree)
        if self.view.tnodes:
            newest = self.view.tnodes[max(self.view.tnodes)]
            tree.scroll_to_node(newest)
        self.notify("follow mode on", timeout=1)

    def action_history(self) -> None:
        self.push_screen(HistoryScreen())

    def action_export(self) -> None:
        if self.record is None:
            self.notify("nothing to export yet: run or open a run first", severity="warning")
            return
        from tts_tui.atomic import write_json, write_text

        out = paths.data_dir() / "exports"
        stem = f"{self.record['created'].replace(':', '').replace('-', '')}-{self.record['settings'].get('strategy', 'run')}"
        write_json(out / f"{stem}.json", self.record)
        write_text(out / f"{stem}.md", markdown_report(self.record))
        self.notify(f"exported to {out / stem}.json and .md")
        self.last_export = out / f"{stem}.md"

    async def action_quit(self) -> None:
        self.controller.stop()  # the run's engine loop sees it within one decode step
        self.exit()

    # -- endpoint health ---------------------------------------------------------------------
    def _probe(self, names: Iterable[str]) -> None:
        """Probe each endpoint on a daemon thread of its own: a server that never answers
        holds neither the UI nor the other probes, nor the exit (unlike a Textual thread
        worker, whose executor is joined when the app ends)."""
        check = getattr(self.runner, "health", None)
        for name in names:
            if check is None or self.health.get(name) is ep.CHECKING:
                continue  # one probe per endpoint at a time
            self.health[name] = ep.CHECKING
            threading.Thread(target=self._probe_one, args=(check, name), name=f"tts-health-{name}",
                             daemon=True).start()

    def _probe_one(self, check: Callable[[str], ep.Health], name: str) -> None:
        try:
            health = check(name)
        except Exception as exc:  # a probe must never take the UI down
            health = ep.Health("unreachable", f"endpoint {name}: {type(exc).__name__}: {exc}")
        self._probed.append((name, health))  # the UI thread shows it at its next tick

    def _show_health(self) -> None:
        while self._probed:
            name, health = self._probed.popleft()
            self.health[name] = health
        select = self.query_one("#model", Select)
        chosen = select.value
        opts = self._model_options()
        if isinstance(chosen, str) and chosen not in [v for _, v in opts]:
            opts.append((chosen, chosen))  # removed from endpoints.json meanwhile: still the choice
        with select.prevent(Select.Changed):  # relabelling is not the user choosing a model
            select.set_options(opts)
            select.value = chosen
        self._endpoint_status()

    def _endpoint_status(self) -> None:
        """The chosen endpoint's health in the status line, unless a run is using that line."""
        chosen = self.query_one("#model", Select).value
        if isinstance(chosen, str) and ep.is_endpoint(chosen) and not self.running:
            health = self.health.get(ep.name_of(chosen))
            if health is not None and health.detail:
                self.set_status(health.detail)

    @on(Select.Changed, "#model")
    def _model_chosen(self) -> None:
        chosen = self.query_one("#model", Select).value
        if isinstance(chosen, str) and ep.is_endpoint(chosen):
            self._endpoint_status()
            self._probe([ep.name_of(chosen)])  # a server started since the last look shows as ok

    # -- showing the current run (the main screen is its own RunHost) ------------------------
    def _drain(self) -> None:
        if not self.view.is_mounted:
            return  # shutting down
        if self._probed:
            self._show_health()
        urgent = self.controller.take_urgent()  # a job ended: show it without waiting for the governor
        if not (self.governor.due() or urgent):
            return
        items = self.controller.drain()
        if items:
            deliver(self, items)
        for lane in self.controller.targets:
            if lane.view.is_mounted:
                lane.view.flush_tree()  # a tree update held back by its lower frame rate
        self.governor.frame_done()

    def show_error(self, text: str) -> None:
        self.set_status("error: " + text)
        self.query_one("#errors", Static).update(text)
        self.last_error = text

    def show_record(self, view: SearchView, record: dict[str, Any]) -> None:
        if view is self.view:
            self.record = record

    def run_updated(self) -> None:
        pass  # the main view's panels are all it shows

    def set_status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    # -- history and replay ------------------------------------------------------------------
    def open_run(self, path: Path) -> None:
        try:
            record = load_run(path)
        except (OSError, ValueError) as exc:
            self.notify(f"cannot open {path.name}: {exc}", severity="error", markup=False)
            return
        self.controller.abandon()  # the replay takes the view: a run still going must not write into it
        self.record = record
        self.replay = [ev.Event.from_dict(e) for e in record.get("events", [])]
        self.replay_pos = len(self.replay)
        self._show_replay()

    def _show_replay(self) -> None:
        assert self.record is not None and self.replay is not None
        rec = self.record
        self.view.reset(rec["problem"], int(rec["settings"].get("budget", 1)))
        self.view.running = True
        self.view.apply(self.replay[: self.replay_pos], show_rates=False)
        self.view.flush_tree(force=True)
        self.view.finish() if self.replay_pos >= len(self.replay) else None
        t = self.replay[self.replay_pos - 1].t if self.replay_pos else 0.0
        self.query_one("#timeline", Static).update(
            f"replay {self.replay_pos}/{len(self.replay)} events  t={t:.2f}s  (ctrl+←/→ step)")

    def action_timeline(self, delta: int) -> None:
        if self.replay is None:
            return
        self.replay_pos = max(0, min(len(self.replay), self.replay_pos + delta))
        self._show_replay()

    def on_unmount(self) -> None:
        self.controller.stop()


def run_app(endpoints: dict[str, ep.Endpoint] | None = None, **presets: Any) -> None:
    """`endpoints`: servers named on the command line, listed beside the configured ones."""
    app = TTSApp(runner=SolverRunner(endpoints), presets=presets)
    try:
        app.run()
    finally:
        app.controller.shutdown()  # waits for the run thread before the model is freed
