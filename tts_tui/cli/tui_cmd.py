"""`tts tui` (and `tts` alone): open the terminal UI, optionally preset."""

from __future__ import annotations

from typing import Any, Optional

import typer


def open_tui(**presets: Any) -> None:
    from tts_tui.tui.app import run_app

    run_app(**presets)


def tui_command(
    problem: Optional[str] = typer.Argument(None, help="Preset the problem."),
    strategy: Optional[str] = typer.Option(None, "--strategy", "-s"),
    n: Optional[int] = typer.Option(None, "--n"),
    m: Optional[int] = typer.Option(None, "--m"),
    budget: Optional[int] = typer.Option(None, "--budget"),
    temperature: Optional[float] = typer.Option(None, "--temperature", "-t"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    model: Optional[str] = typer.Option(None, "--model"),
    verifier: Optional[str] = typer.Option(None, "--verifier"),
    adaptive: Optional[bool] = typer.Option(None, "--adaptive/--fixed",
                                            help="Tick (or clear) the adaptive box: votes stop once decided."),
) -> None:
    """Open the terminal UI (options as in `tts solve` preset the controls)."""
    open_tui(problem=problem, strategy=strategy, n=n, m=m, budget=budget, temperature=temperature,
             seed=seed, model=model, verifier=verifier, adaptive=adaptive)
