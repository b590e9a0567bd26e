"""Where things live on disk: the catalog, downloaded models, user config and runs.

Environment variables override every default, so tests (and users) can move each
directory: TTS_CATALOG, TTS_MODELS_DIR, TTS_CONFIG_DIR, TTS_DATA_DIR.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "tts-tui"
_PKG_DIR = Path(__file__).resolve().parent
_CHECKOUT_MODELS = _PKG_DIR.parent / "models"


def catalog_path() -> Path:
    """The catalog file: env override, the checkout's models/, or the copy shipped in the wheel."""
    env = os.environ.get("TTS_CATALOG")
    if env:
        return Path(env)
    checkout = _CHECKOUT_MODELS / "catalog.toml"
    if checkout.is_file():
        return checkout
    return _PKG_DIR / "data" / "catalog.toml"


def models_dir() -> Path:
    """Where GGUF files are downloaded: env override, the checkout's models/, else the user data dir."""
    env = os.environ.get("TTS_MODELS_DIR")
    if env:
        return Path(env)
    if (_CHECKOUT_MODELS / "catalog.toml").is_file() and os.access(_CHECKOUT_MODELS, os.W_OK):
        return _CHECKOUT_MODELS
    return data_dir() / "models"


def config_dir() -> Path:
    env = os.environ.get("TTS_CONFIG_DIR")
    return Path(env) if env else Path(platformdirs.user_config_dir(APP_NAME))


def data_dir() -> Path:
    env = os.environ.get("TTS_DATA_DIR")
    return Path(env) if env else Path(platformdirs.user_data_dir(APP_NAME))


def runs_dir() -> Path:
    return data_dir() / "runs"


def auto_table_path() -> Path:
    """The user's refitted compute-optimal table (`tts eval --refit-auto` writes it)."""
    return config_dir() / "auto_table.json"
