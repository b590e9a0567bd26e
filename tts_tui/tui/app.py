"""The TUI: controls on the left, the live tree in the middle, answers and compute on the right.

The search runs in a thread worker. Its listener only appends events to a deque; a
20 Hz timer drains the deque and applies everything in one batch update, so a fast
search never floods the screen and the UI costs the search almost nothing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import (
    Button,
    Footer,
    Header,
    Input,
    Label,
    ProgressBar,
    Select,
    Sparkline,
    Static,
    TextArea,
    Tree,
)
from textual.widgets.tree import TreeNode

from tts_tui import paths
from tts_tui.errors import TTSError
from tts_tui.runlog import list_runs, load_run, markdown_report, run_record, save_run
from tts_tui.search import events as ev
from tts_tui.search.protocol import SearchParams
from tts_tui.search.strategies import STRATEGIES, validate
from tts_tui.search.tree import CHOSEN, FINISHED, PRUNED, Node
from tts_tui.search.tree import Tree as SearchTree
from tts_tui.session import VERIFIERS
from tts_tui.tui.runner import RunRequest, Runner, SolverRunner
from tts_tui.tui.settings import Settings, load_settings, save_settings
from tts_tui.tui.view import answer_bars, detail_text, node_label

FRAME_S = 0.05  # at most ~20 screen updates a second
DETAIL_DELAY_S = 0.08
STATUS = "status"  # a pseudo-event kind for worker status lines


class Panel(Widget):
    """Fixed-size text that repaints without a layout pass (Static.update re-lays out the
    screen, which at 20 updates a second costs the search real CPU on a small machine)."""

    DEFAULT_CSS = "Panel { height: auto; }"

    def __init__(self, text: Any = "", **kw: Any) -> None:
        super().__init__(**kw)
        self.text = text

    def render(self) -> Any:
        return self.text

    def update(self, text: Any) -> None:
        if text != self.text:
            self.text = text
            self.refresh()


class NumberInput(Input):
    """A numeric field; + and - step it (digits only are typed, so +/- are free keys)."""

    BINDINGS = [
        Binding("plus,equals_sign", "step(1)", "+", show=False, priority=True),
        Binding("minus", "step(-1)", "-", show=False, priority=True),
    ]

    def __init__(self, value: Any, step: float, title: str, is_float: bool = False, **kw: Any) -> None:
        super().__init__(str(value), restrict=r"[0-9.]*" if is_float else r"[0-9]*", **kw)
        self.border_title = title
        self.step = step
        self.is_float = is_float

    def action_step(self, sign: int) -> None:
        try:
            cur = float(self.value or 0)
        except ValueError:
            cur = 0.0
        new = max(0.0, cur + sign * self.step)
        self.value = f"{new:.2f}".rstrip("0").rstrip(".") if self.is_float else str(int(new))


class SearchView(Vertical):
    """The tree, its detail pane, and the answer/compute panels, fed by events."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.model = SearchTree("")
        self.tnodes: dict[int, TreeNode] = {}
        self.running = False
        self.follow = True
        self.budget = 1
        self.spent = 0
        self.groups: list[dict[str, Any]] = []
        self.rates: list[float] = []
        self.started = time.monotonic()
        self.info = ""
        self.result: dict[str, Any] | None = None
        self._last_rate = (time.monotonic(), 0)

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="center"):
                tree: Tree[int] = Tree("problem", id="tree")
                tree.show_root = True
                yield tree
                with VerticalScroll(id="detail-scroll"):
                    yield Static("Select a node to see its path.", id="detail")
            with Vertical(id="side"):
                yield Label("Answers", classes="title")
                yield Panel(answer_bars([]), id="answers")
                yield Panel("", id="best")
                yield Label("Compute", classes="title")
                yield ProgressBar(total=1, show_eta=False, id="budget")
                yield Sparkline([0.0], id="rate")
                yield Panel("", id="compute")

    # -- lifecycle --------------------------------------------------------------------
    def reset(self, problem: str, budget: int) -> None:
        tree = self.query_one("#tree", Tree)
        tree.clear()
        tree.root.set_label(problem.strip().splitlines()[0][:60] if problem.strip() else "problem")
        tree.root.data = 0
        tree.root.expand()
        self.model = SearchTree(problem)
        self.tnodes = {0: tree.root}
        self.budget, self.spent = max(1, budget), 0
        self.groups, self.rates, self.info, self.result = [], [], "", None
        self.started = time.monotonic()
        self._last_rate = (self.started, 0)
        self.query_one("#budget", ProgressBar).update(total=self.budget, progress=0)
        self.query_one("#detail", Static).update("Select a node to see its path.")
        self.refresh_panels()

    def apply(self, events: Iterable[ev.Event], show_rates: bool = True) -> None:
        tree = self.query_one("#tree", Tree)
        newest: TreeNode | None = None
        for e in events:
            ev.apply_event(self.model, e)
            if e.kind == ev.NODE_ADDED:
                node = self.model.nodes[e.node_id]
                parent = self.tnodes.get(node.parent_id, tree.root)
                tn = parent.add(node_label(node, self.running), data=node.id, expand=True)
                self.tnodes[node.id] = tn
                self.spent += node.n_tokens
                newest = tn
            elif e.kind in (ev.NODE_SCORED, ev.NODE_STATUS) and e.node_id in self.tnodes:
                node = self.model.nodes[e.node_id]
                tn = self.tnodes[e.node_id]
                tn.set_label(node_label(node, self.running))
                if node.status == PRUNED and tn.children:
                    tn.collapse()  # pruned subtrees fold away but stay browsable
            elif e.kind == ev.VOTES:
                self.groups = e.data["groups"]
            elif e.kind == ev.INFO:
                self.info = e.data["text"]
            elif e.kind == ev.BUDGET:
                self.spent = e.data["spent"]
            elif e.kind == ev.DONE:
                self.result = e.data
                self.groups = e.data.get("votes", self.groups)
        if show_rates:
            now = time.monotonic()
            t0, s0 = self._last_rate
            if now - t0 >= 0.5:
                self.rates = (self.rates + [(self.spent - s0) / (now - t0)])[-60:]
                self._last_rate = (now, self.spent)
        if newest is not None and self.follow:
            self.call_after_refresh(tree.scroll_to_node, newest)
        self.refresh_panels(show_rates)

    def finish(self) -> None:
        """After a run: relabel, highlight the chosen path root to answer."""
        self.running = False
        tree = self.query_one("#tree", Tree)
        for nid, tn in self.tnodes.items():
            if nid in self.model.nodes and nid != 0:
                tn.set_label(node_label(self.model.nodes[nid], False))
        chosen = [n for n in self.model.nodes.values() if n.status == CHOSEN]
        if chosen:
            last = max(chosen, key=lambda n: n.depth)
            for n in self.model.path(last):
                self.tnodes[n.id].expand()
            self.call_after_refresh(tree.scroll_to_node, self.tnodes[last.id])
        self.refresh_panels()

    # -- panels ---------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        c = {"live": 0, "pruned": 0, "finished": 0}
        for n in self.model.nodes.values():
            if n.kind == "root":
                continue
            if n.status in (FINISHED, CHOSEN):
                c["finished"] += 1
            elif n.status == PRUNED:
                c["pruned"] += 1
            elif self.running:
                c["live"] += 1
        return c

    def refresh_panels(self, show_rates: bool = True) -> None:
        self.query_one("#answers", Panel).update(answer_bars(self.groups))
        best = "best: -"
        if self.groups:
            total = sum(g["weight"] for g in self.groups) or 1.0
            best = f"best: {self.groups[0]['answer']}  confidence {self.groups[0]['weight'] / total:.0%}"
        if self.result is not None:
            best = f"answer: {self.result['answer']}  confidence {self.result['confidence']:.0%}"
        self.query_one("#best", Panel).update(best)
        bar = self.query_one("#budget", ProgressBar)
        if bar.progress != min(self.spent, self.budget) or bar.total != self.budget:
            bar.update(total=self.budget, progress=min(self.spent, self.budget))
        spark = self.query_one("#rate", Sparkline)
        if show_rates and list(spark.data or []) != (self.rates or [0.0]):
            spark.data = self.rates or [0.0]
        c = self.counts()
        lines = [f"tokens {self.spent}/{self.budget}",
                 f"live {c['live']}  pruned {c['pruned']}  finished {c['finished']}"]
        if show_rates:
            rate = self.rates[-1] if self.rates else 0.0
            lines.append(f"{rate:.1f} tok/s  elapsed {time.monotonic() - self.started:.1f}s")
        if self.info:
            lines.append(self.info)
        self.query_one("#compute", Panel).update("\n".join(lines))

    @on(Tree.NodeHighlighted, "#tree")
    def _show_detail(self, message: Tree.NodeHighlighted) -> None:
        nid = message.node.data
        tree = self.query_one("#tree", Tree)
        if tree.has_focus and self.running:
            self.follow = False  # the user moved the cursor: stop following
        if nid is None or nid not in self.model.nodes or nid == 0:
            return
        # Debounced: holding a cursor key moves the cursor at once; the (re-laid-out)
        # detail pane follows when the cursor settles.
        self._detail_for = nid
        if getattr(self, "_detail_timer", None) is not None:
            self._detail_timer.stop()
        self._detail_timer = self.set_timer(DETAIL_DELAY_S, self._update_detail)

    def _update_detail(self) -> None:
        self._detail_timer = None
        node = self.model.nodes.get(getattr(self, "_detail_for", -1))
        if node is not None:
            self.query_one("#detail", Static).update(detail_text(self.model, node))


class HistoryScreen(Screen):
    """Saved runs; Enter opens one as it ended, with a timeline to step through it."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        from textual.widgets import OptionList

        yield Header()
        runs = list_runs()
        opts = []
        for p in runs[:200]:
            try:
                rec = load_run(p)
                title = (rec["problem"].splitlines() or [""])[0][:50]
                opts.append(f"{rec['created']}  {rec['settings'].get('strategy', '?'):13} "
                            f"{str(rec['result']['answer'])[:12]:12}  {title}")
            except (OSError, ValueError, KeyError):
                opts.append(f"{p.name} (unreadable)")
        self.paths = runs[:200]
        yield Label(f"{len(runs)} saved runs in {paths.runs_dir()}  (Enter: open, Escape: back)")
        yield OptionList(*opts, id="runs")
        yield Footer()

    def on_option_list_option_selected(self, message) -> None:
        self.app.open_run(self.paths[message.option_index])
        self.app.pop_screen()


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
    #rate { height: 3; }
    #answers { height: 9; }
    #best { height: 1; }
    #compute { height: 5; }
    #timeline { height: auto; color: $accent; }
    """
    BINDINGS = [
        Binding("ctrl+r", "run", "Run", priority=True),
        Binding("escape", "stop", "Stop", priority=True),
        Binding("ctrl+f", "follow", "Follow"),
        Binding("ctrl+o", "history", "History"),
        Binding("ctrl+e", "export", "Export"),
        Binding("ctrl+left", "timeline(-1)", "Step back", show=False),
        Binding("ctrl+right", "timeline(1)", "Step fwd", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, runner: Runner | None = None, presets: dict[str, Any] | None = None,
                 show_rates: bool = True, remember: bool = True) -> None:
        super().__init__()
        self.runner: Runner = runner or SolverRunner()
        s = load_settings() if remember else Settings()
        for k, v in (presets or {}).items():
            if v is not None and hasattr(s, k):
                setattr(s, k, v)
        self.settings = s
        self.show_rates = show_rates
        self.remember = remember
        self.cancel = threading.Event()
        self.pending: deque[ev.Event] = deque()
        self.record: dict[str, Any] | None = None
        self.replay: list[ev.Event] | None = None
        self.replay_pos = 0
        self.last_error = ""

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
                yield Select([(v, v) for v in VERIFIERS if v != "prm"], value=s.verifier
                             if s.verifier != "prm" else "confidence", allow_blank=False, id="verifier")
                yield Static("", id="errors")
                with Horizontal(classes="row"):
                    yield Button("Run", id="run", variant="primary")
                    yield Button("Stop", id="stop", variant="error")
                yield Static("", id="status")
                yield Static("", id="timeline")
            yield SearchView(id="view")
        yield Footer()

    def _model_options(self) -> list[tuple[str, str]]:
        try:
            models = self.runner.models()
        except TTSError:
            models = []
        opts = [(f"{mid} ({'present' if ok else 'absent: will download'})", mid) for mid, ok in models]
        if self.settings.model and self.settings.model not in [m for m, _ in models]:
            opts.append((self.settings.model, self.settings.model))
        return opts

    def on_mount(self) -> None:
        self.set_interval(FRAME_S, self._drain)

    @property
    def view(self) -> SearchView:
        return self.query_one("#view", SearchView)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Run", "Run the search with the current settings (ctrl+r)", self.action_run)
        yield SystemCommand("Stop", "Stop the running search (escape)", self.action_stop)
        yield SystemCommand("Follow", "Follow the newest activity in the tree (ctrl+f)", self.action_follow)
        yield SystemCommand("History", "Browse and replay saved runs (ctrl+o)", self.action_history)
        yield SystemCommand("Export", "Export this run as JSON and Markdown (ctrl+e)", self.action_export)

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
        params = SearchParams(n=n, m=m, budget=budget, temperature=temperature, seed=seed)
        try:
            validate(str(strategy), params)
        except TTSError as exc:
            return None, str(exc)
        self.settings = Settings(problem, str(strategy), n, m, budget, temperature, seed, model or "", verifier)
        return RunRequest(problem, str(strategy), params, verifier, model), ""

    @on(Input.Changed)
    @on(Select.Changed)
    def _validate_inline(self) -> None:
        if not self.is_mounted:
            return
        req, why = self.read_controls()
        if why == "type a problem first":
            why = ""
        self.query_one("#errors", Static).update(why)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Escape stops a run; when nothing runs it goes on to the widgets (closing a picker...).
        if action == "stop" and self.is_mounted:
            return self.view.running
        return True

    # -- actions ---------------------------------------------------------------------------
    @on(Button.Pressed, "#run")
    def action_run(self) -> None:
        req, why = self.read_controls()
        if req is None:
            self.query_one("#errors", Static).update(why)
            self.last_error = why
            return
        self.query_one("#errors", Static).update("")
        self.cancel.set()  # a run still going ends before the new one starts
        self.cancel = threading.Event()
        self.pending.clear()
        self.replay = None
        self.query_one("#timeline", Static).update("")
        self.view.reset(req.problem, req.params.budget)
        self.view.running = True
        self.view.follow = True
        if self.remember:
            save_settings(self.settings)
        self.run_search(req, self.cancel)

    @on(Button.Pressed, "#stop")
    def action_stop(self) -> None:
        if self.view.running:
            self.cancel.set()
            self.set_status("stopping…")

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
        self.cancel.set()  # the worker's engine loop sees it within one decode step
        self.exit()

    # -- the worker ------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="search")
    def run_search(self, req: RunRequest, cancel: threading.Event) -> None:
        push = self.pending.append  # deque.append is thread-safe and never blocks

        def status(text: str) -> None:
            push(ev.Event(STATUS, data={"text": text}))

        try:
            result, search = self.runner.run(req, push, cancel, status)
            settings = {"strategy": req.strategy, "verifier": req.verifier, **asdict(req.params)}
            model = getattr(self.runner, "model_name", lambda: req.model or "")()
            record = run_record(search, result, settings=settings, model=model)
            try:
                save_run(record)
            except OSError as exc:
                status(f"could not save the run: {exc}")
            push(ev.Event("record", data={"record": record}))
            status(("stopped" if result.cancelled else "done") + f": answer {result.answer}")
        except TTSError as exc:
            push(ev.Event("error", data={"text": str(exc)}))
        except Exception as exc:  # never let a worker crash the UI
            push(ev.Event("error", data={"text": f"{type(exc).__name__}: {exc}"}))
        finally:
            push(ev.Event("finished"))

    def _drain(self) -> None:
        if not self.pending:
            return
        batch: list[ev.Event] = []
        while self.pending:
            e = self.pending.popleft()
            if e.kind == STATUS:
                self.set_status(e.data["text"])
            elif e.kind == "error":
                self.set_status("error: " + e.data["text"])
                self.query_one("#errors", Static).update(e.data["text"])
                self.last_error = e.data["text"]
            elif e.kind == "record":
                self.record = e.data["record"]
            elif e.kind == "finished":
                if batch:
                    with self.batch_update():
                        self.view.apply(batch, self.show_rates)
                    batch = []
                self.view.finish()
            else:
                batch.append(e)
        if batch:
            with self.batch_update():
                self.view.apply(batch, self.show_rates)

    def set_status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    # -- history and replay ------------------------------------------------------------------
    def open_run(self, path: Path) -> None:
        try:
            record = load_run(path)
        except (OSError, ValueError) as exc:
            self.notify(f"cannot open {path.name}: {exc}", severity="error")
            return
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
        self.cancel.set()


def run_app(**presets: Any) -> None:
    app = TTSApp(presets=presets)
    try:
        app.run()
    finally:
        app.runner.close()
