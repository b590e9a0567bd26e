"""The adaptive-vote options that `tts solve`, `tts eval` and `tts tui` share: declared once,
with their defaults taken from `AdaptiveParams`, so the three commands cannot drift apart."""

from __future__ import annotations

import typer

from tts_tui.errors import TTSError
from tts_tui.search.protocol import AdaptiveParams

_DEFAULT = AdaptiveParams()

STOP_AT = typer.Option(_DEFAULT.stop_at, "--stop-at", help="Adaptive: stop once P(leader holds) reaches this.")
WAVE = typer.Option(_DEFAULT.wave, "--wave", help="Adaptive: samples decoded together per wave.")
CUT_WINDOW = typer.Option(_DEFAULT.window, "--cut-window",
                          help="Adaptive --cut: tokens in the sliding confidence window (scripts/tune_adaptive.py picks it).")
CUT_KEEP = typer.Option(_DEFAULT.keep, "--cut-keep",
                        help="Adaptive --cut: the first wave's quantile kept above the floor (0.9: its lowest 10% set it).")


def cut_option(text: str):
    """`--cut`: each command says what a cut does there (a live run, or extra eval rows)."""
    return typer.Option(False, "--cut", help=text)


def adaptive_params(on: bool, stop_at: float, wave: int, cut: bool, window: int = _DEFAULT.window,
                    keep: float = _DEFAULT.keep) -> AdaptiveParams | None:
    """The adaptive knobs, or None for a fixed-N vote (--cut needs --adaptive). --stop-at and
    --wave are range-checked by the strategies' `validate`, with the rest of the params."""
    if not on:
        if cut:
            raise TTSError("--cut needs --adaptive (the first wave sets the confidence floor)")
        return None
    if window < 1:
        raise TTSError(f"--cut-window must be at least 1 token, got {window}")
    if not 0.0 < keep <= 1.0:
        raise TTSError(f"--cut-keep must be in (0, 1], got {keep}")
    return AdaptiveParams(stop_at=stop_at, wave=wave, cut=cut, window=window, keep=keep)
