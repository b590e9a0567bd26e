"""The typer CLI: `tts solve`, `tts eval`, `tts models`, `tts doctor`; `tts` alone opens the TUI."""
