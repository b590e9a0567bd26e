"""Pilot-driven tests of the TUI against a scripted fake generator."""

from __future__ import annotations

import asyncio
import time

import pytest
from textual.widgets import Input, Static, Tree

import snapshot
from fakes import FakeRunner
from tts_tui.runlog import list_runs
from tts_tui.tui.app import TTSApp
from tts_tui.tui.compare import CompareScreen

SIZE = (160, 48)


def make_app(delay: float = 0.0, **presets) -> TTSApp:
    presets = {"problem": "What is 6*7?", "strategy": "beam", "n": 4, "m": 2, "model": "fake-model", **presets}
    return TTSApp(runner=FakeRunner(delay), presets=presets, show_rates=False, remember=False)


async def wait_done(pilot, app, timeout=10.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        await pilot.pause(0.05)
        if not app.view.running and app.record is not None:  # the worker's last events are shown
            return
    raise AssertionError("run did not finish")


def tree_ids(app) -> set[int]:
    return set(app.view.tnodes)


async def test_run_builds_the_tree_and_answers():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_done(pilot, app)
        assert len(app.view.tnodes) > 5
        assert app.view.result["answer"] == "42"
        assert "42" in str(app.query_one("#answers").render())
        chosen = [n for n in app.view.model.nodes.values() if n.status == "chosen"]
        assert chosen
        assert list_runs()  # saved


async def test_stop_mid_run_leaves_a_browsable_tree():
    app = make_app(delay=0.05, strategy="majority", n=16)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await pilot.pause(0.3)
        t0 = time.monotonic()
        await pilot.press("escape")
        await wait_done(pilot, app)
        assert time.monotonic() - t0 < 0.5 + 0.3
        assert app.record["result"]["cancelled"]
        tree = app.query_one("#tree", Tree)
        tree.focus()
        await pilot.pause()
        start = tree.cursor_line
        await pilot.press("down", "down")
        assert tree.cursor_line == start + 2


async def test_change_n_and_rerun():
    app = make_app(strategy="majority", n=4)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_done(pilot, app)
        first = len([n for n in app.view.model.nodes.values() if n.depth == 1])
        app.query_one("#n", Input).value = "8"
        await pilot.pause()
        await pilot.press("ctrl+r")
        await wait_done(pilot, app)
        second = len([n for n in app.view.model.nodes.values() if n.depth == 1])
        assert (first, second) == (4, 8)
        assert [r.params.n for r in app.runner.requests] == [4, 8]


async def test_plus_minus_keys_step_numbers():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.query_one("#n", Input).focus()
        await pilot.press("plus", "plus", "minus")
        assert app.query_one("#n", Input).value == "5"


async def test_selecting_a_node_shows_its_path():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_done(pilot, app)
        tree = app.query_one("#tree", Tree)
        tree.focus()
        deep = max(app.view.model.nodes.values(), key=lambda n: n.depth)
        tn = app.view.reveal(deep.id)  # may sit in a pruned (collapsed, not yet made) subtree
        tree.select_node(tn)
        tree.move_cursor(tn)
        await pilot.pause(0.3)
        text = str(app.query_one("#detail", Static).render())
        assert "Step 1" in text and f"Step {deep.depth}" in text
        assert "What is 6*7?" in text


@pytest.mark.parametrize(
    "field,value,msg",
    [("n", "0", "N must be"), ("m", "3", "must divide"), ("budget", "5", "budget"), ("temperature", "9", "temperature"),
     ("m", "9", "M must be")],
)
async def test_invalid_input_is_explained_inline(field, value, msg):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.query_one(f"#{field}", Input).value = value
        await pilot.pause()
        assert msg in str(app.query_one("#errors", Static).render())
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert app.runner.requests == []  # nothing ran


@pytest.mark.parametrize("field,after", [("n", "3"), ("m", "1"), ("budget", "3840"), ("seed", "0"),
                                         ("temperature", "0.2")])
async def test_numeric_controls_refuse_letters(field, after):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        box = app.query_one(f"#{field}", Input)
        box.focus()
        await pilot.press("x", "minus", "e")  # letters are refused; '-' steps down (never below 0)
        assert box.value == after


async def test_empty_problem_is_refused():
    app = make_app(problem="")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert "problem" in app.last_error and app.runner.requests == []


async def test_history_replay_and_timeline():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_done(pilot, app)
        n_nodes = len(app.view.model.nodes)
        app.open_run(list_runs()[0])
        await pilot.pause()
        assert len(app.view.model.nodes) == n_nodes
        total = len(app.replay)
        for _ in range(total):
            await pilot.press("ctrl+left")
        assert app.replay_pos == 0 and len(app.view.model.nodes) == 1
        await pilot.press("ctrl+right", "ctrl+right")
        assert app.replay_pos == 2 and len(app.view.model.nodes) >= 2


async def test_history_screen_lists_runs():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_done(pilot, app)
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "HistoryScreen"
        await pilot.press("enter")
        await pilot.pause()
        assert app.replay is not None


async def test_export_json_and_markdown():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_done(pilot, app)
        await pilot.press("ctrl+e")
        md = app.last_export.read_text()
        assert "42" in md and "## Chosen path" in md
        assert app.last_export.with_suffix(".json").is_file()


async def test_quit_mid_run_leaves_no_thread():
    app = make_app(delay=0.05, strategy="majority", n=16)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await pilot.pause(0.3)
        assert app.view.running
        await pilot.press("ctrl+q")
        quit_at = time.monotonic()
    t0 = time.monotonic()
    while not hasattr(app.runner, "finished_at") and time.monotonic() - t0 < 1:
        await asyncio.sleep(0.02)
    # the worker's search saw the cancel and returned: nothing keeps running
    assert app.runner.finished_at - quit_at < 0.5
    assert all(w.is_finished for w in app.workers)


async def test_key_press_is_fast_with_a_300_node_tree():
    app = make_app(strategy="majority", n=100)  # 100 chains x 3 steps = 300 nodes
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_done(pilot, app, timeout=30)
        assert len(app.view.tnodes) >= 300
        tree = app.query_one("#tree", Tree)
        tree.focus()
        await pilot.pause()
        start = tree.cursor_line
        took = []
        for _ in range(5):  # the best of five: the machine may be busy with other work
            t0 = time.perf_counter()
            await pilot.press("down")  # returns once the key is handled and the app idle
            took.append(time.perf_counter() - t0)
            await pilot.pause(0.15)  # let the debounced detail pane settle between presses
        assert min(took) < 0.1, took
        assert tree.cursor_line == start + 5


TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"


async def test_snapshots_of_the_main_screens():
    """Main, history and compare screens against tests/snapshots/*.svg (timings off)."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_done(pilot, app)
        await pilot.pause(0.3)  # the final scroll to the answer runs after a refresh
        snapshot.check("main", app.export_screenshot())
        await pilot.press("ctrl+o")
        await pilot.pause(0.3)
        snapshot.check("history", app.export_screenshot(), masks=(TIMESTAMP, r"saved runs in \S+"))
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("ctrl+k")
        await pilot.pause()
        await pilot.press("ctrl+r")
        t0 = time.monotonic()
        while app.screen.running or any(v.record is None for v in app.screen.views()):
            assert time.monotonic() - t0 < 10
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        snapshot.check("compare", app.export_screenshot())


async def test_compare_runs_two_strategies_on_the_same_problem_and_budget():
    app = make_app(strategy="beam", n=4, m=2, budget=600)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+k")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        screen.query_one("#b-n", Input).value = "8"
        await pilot.pause()
        await pilot.press("ctrl+r")
        t0 = time.monotonic()
        while any(v.result is None for v in screen.views()) and time.monotonic() - t0 < 10:
            await pilot.pause(0.05)
        a, b = app.runner.requests
        assert (a.strategy, b.strategy) == ("beam", "majority") and (a.params.n, b.params.n) == (4, 8)
        assert a.problem == b.problem and a.params.budget == b.params.budget == 600
        rows = screen.figures()
        assert [r["run"] for r in rows] == ["A", "B"] and all(r["state"] == "done" for r in rows)
        assert all(0 < r["tokens"] <= 600 and r["answer"] == "42" and r["votes"] for r in rows)
        text = app.export_screenshot()
        assert "majority" in text and "beam" in text
        assert len(list_runs()) == 2  # both saved to history
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, CompareScreen)


async def test_compare_refuses_invalid_b_and_stops_cleanly():
    app = make_app(delay=0.05, strategy="majority", n=16, m=1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+k")
        await pilot.pause()
        screen = app.screen
        screen.query_one("#b-m", Input).value = "3"  # beam: M must divide N
        await pilot.pause()
        assert "must divide" in str(screen.query_one("#cmp-errors", Static).render())
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert app.runner.requests == []
        screen.query_one("#b-m", Input).value = "4"
        await pilot.pause()
        await pilot.press("ctrl+r")
        await pilot.pause(0.3)
        await pilot.press("escape")  # stops A; B never starts
        t0 = time.monotonic()
        while screen.running and time.monotonic() - t0 < 2:
            await pilot.pause(0.05)
        assert not screen.running and len(app.runner.requests) == 1
        assert [r["state"] for r in screen.figures()] == ["done", "stopped"]
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, CompareScreen)


async def test_collapsed_subtrees_are_made_lazily():
    """Steps added under a pruned (collapsed) node stay in the model until it is expanded."""
    from tts_tui.search import events as ev
    from tts_tui.search.tree import Tree as SearchTree

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        view = app.view
        view.reset("p", 100)
        view.running = True
        t = SearchTree("p")
        n1 = t.add(t.root, text="a")
        n2 = t.add(n1, text="b")
        view.apply([ev.node_added(n1), ev.node_added(n2),
                    ev.Event(ev.NODE_STATUS, node_id=n1.id, data={"status": "pruned", "answer": None})])
        view.flush_tree(force=True)
        n3, n4 = t.add(n2, text="c"), t.add(n1, text="d")
        view.apply([ev.node_added(n3), ev.node_added(n4)])
        view.flush_tree(force=True)
        # n1 was pruned in the batch that added n2: only n1 is made, folded
        assert set(view.tnodes) == {0, n1.id} and len(view.model.nodes) == 5
        assert not view.tnodes[n1.id].is_expanded
        view.tnodes[n1.id].expand()
        await pilot.pause()
        assert set(view.tnodes) == {0, n1.id, n2.id, n3.id, n4.id}
        assert view.tnodes[n3.id].parent is view.tnodes[n2.id]


@pytest.mark.model
async def test_smoke_on_the_tiny_real_model(tiny_path):
    """The real engine behind the app: a short run finishes with a tree and a saved record."""
    app = TTSApp(presets={"problem": "What is 2 + 3?", "strategy": "majority", "n": 2, "m": 1, "budget": 128,
                          "model": "smollm2-135m-instruct-q4_1"}, show_rates=False, remember=False)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("ctrl+r")
            t0 = time.monotonic()
            while app.record is None and time.monotonic() - t0 < 120:
                await pilot.pause(0.2)
            assert app.record is not None, app.last_error
            assert app.record["result"]["tokens"] <= 128
            assert len(app.view.tnodes) > 1
    finally:
        app.runner.close()


def test_detail_pane_shows_what_a_revision_was_asked():
    from fakes import FakeGenerator, FakeScorer
    from tts_tui.search.protocol import SearchParams
    from tts_tui.search.run import Search
    from tts_tui.search.strategies import run_strategy
    from tts_tui.tui.view import detail_text
    from tts_tui.verify.answers import MathAnswers

    search = Search(FakeGenerator(answers=("41", "42")), "What is 6*7?", SearchParams(n=2, m=2, max_steps=6),
                    MathAnswers(), FakeScorer())
    run_strategy("revise", search)
    last = max((n for n in search.tree.nodes.values() if n.answer), key=lambda n: n.id)
    text = detail_text(search.tree, last).plain
    assert "Check your solution above" in text and "[asked to check and correct attempt 1]" in text
