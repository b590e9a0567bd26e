"""The TUI's remembered settings (last used), in the user config dir, written atomically."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from tts_tui import paths
from tts_tui.atomic import write_json


@dataclass
class Settings:
    """The controls' values; the last used ones are loaded at start."""

    problem: str = ""
    strategy: str = "beam"
    n: int = 8
    m: int = 4
    budget: int = 4096
    temperature: float = 0.3
    seed: int = 0
    model: str = "qwen2.5-coder-1.5b-instruct-q4_k_m"
    verifier: str = "default"  # the probe where one is trained for the model, else confidence
    adaptive: bool = False  # adaptive votes (majority, weighted, bracket, auto): stop once decided


def settings_path() -> Path:
    return paths.config_dir() / "tui.json"


def load_settings() -> Settings:
    try:
        raw = json.loads(settings_path().read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return Settings()
    names = {f.name for f in fields(Settings)}
    try:
        return Settings(**{k: v for k, v in raw.items() if k in names})
    except TypeError:
        return Settings()


def save_settings(s: Settings) -> None:
    try:
        write_json(settings_path(), asdict(s))
    except OSError:
        pass  # remembering settings is a convenience, never a failure
