"""`tts tui` (and `tts` alone): open the terminal UI, optionally preset."""

from __future__ import annotations

from typing import Any, Optional

import typer

from tts_tui.cli.adaptive_options import CUT_KEEP, CUT_WINDOW, STOP_AT, WAVE, adaptive_params, cut_option
from tts_tui.errors import TTSError


def open_tui(**presets: Any) -> None:
    from tts_tui.tui.app import run_app

    run_app(**presets)


def server_preset(endpoint: Optional[str], backend: str, base_url: Optional[str], model: Optional[str],
                  api_key_env: Optional[str], template: Optional[str]) -> tuple[Optional[str], dict[str, Any]]:
    """The picker value to preset and any endpoint the command line names (listed beside the
    configured ones, never saved). Checked here, so a typo fails before the screen opens."""
    from tts_tui.tui import endpoints as ep

    if endpoint:
        if base_url or backend != "llamacpp":
            raise TTSError("give --endpoint NAME or --backend openai --base-url URL, not both")
        from tts_tui.cli.endpoints_cmd import endpoint as named

        named(endpoint)  # raises: no endpoint named ...
        return ep.value(endpoint), {}
    if backend == "llamacpp":
        if base_url:
            raise TTSError("--base-url needs --backend openai")
        return model, {}
    if backend != "openai":
        raise TTSError(f"unknown backend {backend!r} (llamacpp or openai)")
    if not base_url or not model:
        raise TTSError("--backend openai needs --base-url URL and --model NAME (the server's model name)")
    from tts_tui.backends.openai.templates import checked

    template = checked(template)
    from urllib.parse import urlparse

    name = urlparse(base_url).netloc.rpartition("@")[2] or base_url  # host:port names it (never user:pass@)
    return ep.value(name), {name: {"base_url": base_url, "model": model, "api_key_env": api_key_env,
                                   "template": template}}


def tui_command(
    problem: Optional[str] = typer.Argument(None, help="Preset the problem."),
    strategy: Optional[str] = typer.Option(None, "--strategy", "-s"),
    n: Optional[int] = typer.Option(None, "--n"),
    m: Optional[int] = typer.Option(None, "--m"),
    budget: Optional[int] = typer.Option(None, "--budget"),
    temperature: Optional[float] = typer.Option(None, "--temperature", "-t"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    model: Optional[str] = typer.Option(None, "--model", help="Catalog id or GGUF path (openai: the server's model name)."),
    verifier: Optional[str] = typer.Option(None, "--verifier"),
    adaptive: Optional[bool] = typer.Option(None, "--adaptive/--fixed",
                                            help="Tick (or clear) the adaptive box: votes stop once decided."),
    stop_at: float = STOP_AT,
    wave: int = WAVE,
    cut: bool = cut_option("Adaptive: DeepConf-cut weak traces after the first wave."),
    cut_window: int = CUT_WINDOW,
    cut_keep: float = CUT_KEEP,
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="Preset the picker to a named server (tts endpoints add)."),
    backend: str = typer.Option("llamacpp", "--backend", help="llamacpp (in process) or openai (a server)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="openai: the server, e.g. http://127.0.0.1:8080"),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="openai: the variable holding the API key."),
    template: Optional[str] = typer.Option(None, "--template",
                                           help="openai: chatml, or a file with the model's template (.jinja, tokenizer_config.json, .gguf), where the server renders none."),
) -> None:
    """Open the terminal UI (options as in `tts solve` preset the controls)."""
    from tts_tui.search.protocol import SearchParams
    from tts_tui.search.strategies import validate

    # checked here, so a bad knob fails before the screen opens; they apply when the box is ticked
    knobs = adaptive_params(True, stop_at, wave, cut, cut_window, cut_keep)
    validate("majority", SearchParams(adaptive=knobs))  # --stop-at and --wave in range
    model, endpoints = server_preset(endpoint, backend, base_url, model, api_key_env, template)
    open_tui(problem=problem, strategy=strategy, n=n, m=m, budget=budget, temperature=temperature,
             seed=seed, model=model, verifier=verifier, adaptive=adaptive, endpoints=endpoints, adaptive_knobs=knobs)
