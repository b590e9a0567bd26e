"""`tts tui` (and `tts` alone): open the terminal UI."""

from __future__ import annotations

from tts_tui.errors import TTSError


def open_tui(**presets) -> None:
    try:
        from tts_tui.tui.app import run_app
    except ImportError:
        raise TTSError("the TUI is not part of this build yet; use `tts solve` (see README)") from None
    run_app(**presets)


def tui_command() -> None:
    """Open the terminal UI."""
    open_tui()
