"""The history screen: saved runs, newest first."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Label

from tts_tui import paths
from tts_tui.runlog import list_runs, load_run


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
        yield Label(f"{len(runs)} saved runs in {paths.runs_dir()}  (Enter: open, Escape: back)", markup=False)
        yield OptionList(*opts, id="runs", markup=False)  # problems and answers are shown as typed
        yield Footer()

    def on_option_list_option_selected(self, message) -> None:
        self.app.open_run(self.paths[message.option_index])
        self.app.pop_screen()
