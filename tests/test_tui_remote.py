"""Issue 18: named servers in the TUI's model picker, with their health, and runs on them
(against the local stand-in server; no model)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from textual.widgets import Input, Select, Static

from openai_standin import Standin
from tts_tui.errors import TTSError
from tts_tui.tui import endpoints as ep
from tts_tui.tui.app import TTSApp
from tts_tui.tui.runner import SolverRunner

SIZE = (160, 48)


def configure(**servers: str) -> None:
    """endpoints.json in the test's config dir (conftest points TTS_CONFIG_DIR at a tmp dir)."""
    path = Path(os.environ["TTS_CONFIG_DIR"]) / "endpoints.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: {"base_url": url, "model": "standin", "api_key_env": None, "template": None}
                                for name, url in servers.items()}))


def make_app(model: str, runner: SolverRunner | None = None, **presets) -> TTSApp:
    presets = {"problem": "What is 6*7?", "strategy": "majority", "n": 4, "m": 1, "model": model, **presets}
    return TTSApp(runner=runner or SolverRunner(), presets=presets, show_rates=False, remember=False)


def labels(app: TTSApp) -> dict[str, str]:
    """The model picker's options, value -> label."""
    return {str(v): str(label) for label, v in app.query_one("#model", Select)._options}


async def wait_for(pilot, cond, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        await pilot.pause(0.05)


def free_port() -> int:
    """A port nothing listens on (bound, then closed): connection refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_the_picker_lists_an_endpoint_with_its_health_and_a_run_on_it_answers():
    with Standin() as s:
        configure(local=s.url)
        app = make_app("endpoint:local")
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: labels(app).get("endpoint:local") == "endpoint:local (ok)")
            assert app.query_one("#model", Select).value == "endpoint:local"  # relabelling kept the choice
            assert any(not v.startswith("endpoint:") for v in labels(app))  # local models listed beside it
            assert s.url in str(app.query_one("#status", Static).render())
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: not app.view.running and app.record is not None, timeout=30)
            assert app.view.result["answer"] == "42"
            assert len([n for n in app.view.model.nodes.values() if n.depth == 1]) == 4  # the tree
            assert any("seed" in b for b in s.bodies)  # the server decoded the steps (the probe sends no seed)


async def test_a_dead_endpoint_shows_unreachable_and_the_app_stays_responsive():
    with Standin() as s:
        configure(dead=f"http://127.0.0.1:{free_port()}", local=s.url)
        app = make_app("endpoint:dead")
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: "(unreachable)" in labels(app)["endpoint:dead"])
            assert labels(app)["endpoint:local"] == "endpoint:local (ok)"
            assert "endpoint dead:" in str(app.query_one("#status", Static).render())
            await pilot.press("ctrl+r")  # a run on it: one line, never a traceback
            await wait_for(pilot, lambda: "endpoint dead" in app.last_error)
            assert "\n" not in app.last_error and "Traceback" not in app.last_error
            app.query_one("#n", Input).focus()
            await pilot.press("plus")
            assert app.query_one("#n", Input).value == "5"


async def test_a_server_that_never_answers_holds_neither_the_ui_nor_the_exit(monkeypatch):
    monkeypatch.setattr(ep, "HEALTH_TIMEOUT_S", 60.0)
    with socket.socket() as hole:  # accepts connections (the kernel's backlog) and never answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        configure(hole=f"http://127.0.0.1:{hole.getsockname()[1]}")
        app = make_app("endpoint:hole")
        t0 = time.monotonic()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.3)
            assert labels(app)["endpoint:hole"] == "endpoint:hole (checking…)"
            app.query_one("#n", Input).focus()
            t_key = time.monotonic()
            await pilot.press("plus", "plus")
            assert app.query_one("#n", Input).value == "6"
            assert time.monotonic() - t_key < 5  # a generous bound for a loaded 2-core CI
        assert time.monotonic() - t0 < 20  # the exit did not wait for the probe's 60 s


async def test_the_probe_times_out_to_unreachable(monkeypatch):
    monkeypatch.setattr(ep, "HEALTH_TIMEOUT_S", 0.5)
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        configure(hole=f"http://127.0.0.1:{hole.getsockname()[1]}")
        app = make_app("endpoint:hole")
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: "(unreachable)" in labels(app)["endpoint:hole"])


async def test_a_verifier_the_server_cannot_serve_is_the_one_line_input_error():
    with Standin() as s:
        configure(local=s.url)
        app = make_app("endpoint:local", verifier="probe")  # hidden states: local only
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: bool(app.last_error))
            errors = str(app.query_one("#errors", Static).render())
            assert "probe" in errors and "hidden states" in errors and "confidence, deepconf, self-judge" in errors
            assert app.record is None


async def test_a_missing_api_key_variable_is_named_never_a_key(monkeypatch):
    monkeypatch.delenv("TTS_TEST_KEY", raising=False)
    with Standin() as s:
        configure(local=s.url)
        cfg = Path(os.environ["TTS_CONFIG_DIR"]) / "endpoints.json"
        data = json.loads(cfg.read_text())
        data["local"]["api_key_env"] = "TTS_TEST_KEY"
        cfg.write_text(json.dumps(data))
        app = make_app("endpoint:local")
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: labels(app)["endpoint:local"] == "endpoint:local (no key)")
            monkeypatch.setenv("TTS_TEST_KEY", "sk-secret-123")
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: not app.view.running and app.record is not None, timeout=30)
            assert app.view.result["answer"] == "42"
            assert s.headers[-1].get("Authorization") == "Bearer sk-secret-123"
            assert "sk-secret" not in json.dumps(app.record)


def test_no_endpoints_leave_the_picker_as_it_was():
    runner = SolverRunner()
    assert runner.endpoints() == {}
    app = make_app("qwen2.5-coder-1.5b-instruct-q4_k_m", runner)
    assert not any(v.startswith("endpoint:") for _, v in app._model_options())


def test_tts_tui_endpoint_and_base_url_preset_the_picker(monkeypatch):
    from typer.testing import CliRunner

    from tts_tui.cli import tui_cmd
    from tts_tui.cli.app import app as cli

    opened: list[dict] = []
    monkeypatch.setattr(tui_cmd, "open_tui", lambda **kw: opened.append(kw))
    configure(local="http://127.0.0.1:8080")
    assert CliRunner().invoke(cli, ["tui", "--endpoint", "local"]).exit_code == 0
    assert opened[-1]["model"] == "endpoint:local" and opened[-1]["endpoints"] == {}
    missing = CliRunner().invoke(cli, ["tui", "--endpoint", "nope"])
    assert isinstance(missing.exception, TTSError) and "no endpoint named 'nope'" in str(missing.exception)
    url = CliRunner().invoke(cli, ["tui", "--backend", "openai", "--base-url", "http://10.0.0.5:8000",
                                   "--model", "qwen"])
    assert url.exit_code == 0
    assert opened[-1]["model"] == "endpoint:10.0.0.5:8000"
    assert opened[-1]["endpoints"]["10.0.0.5:8000"]["model"] == "qwen"
    both = CliRunner().invoke(cli, ["tui", "--endpoint", "local", "--base-url", "http://x"])
    assert isinstance(both.exception, TTSError)


async def test_a_command_line_server_sits_beside_the_configured_ones():
    with Standin() as s:
        name = s.url.split("//")[1]
        extra = {name: {"base_url": s.url, "model": "standin", "api_key_env": None, "template": None}}
        app = make_app(ep.value(name), SolverRunner(extra))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: labels(app).get(ep.value(name)) == f"endpoint:{name} (ok)")
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: not app.view.running and app.record is not None, timeout=30)
            assert app.view.result["answer"] == "42"


def test_the_tui_never_imports_textual_into_the_core():
    import subprocess
    import sys

    code = ("import sys, tts_tui.tui.endpoints, tts_tui.tui.runner, tts_tui.session; "
            "assert 'textual' not in sys.modules and 'rich' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0



def test_a_server_that_answers_503_is_labelled_with_its_status_not_unreachable():
    with Standin() as s:
        s.fail_get = [503]
        health = ep.check("busy", {"base_url": s.url, "model": "standin"})
    assert health.label == "error 503", health
