"""Cheap checks that a path is a complete GGUF file, before llama.cpp is asked to load it."""

from __future__ import annotations

import struct
from pathlib import Path

from tts_tui.errors import ModelError

GGUF_MAGIC = b"GGUF"


def check_gguf(path: Path, deep: bool = False) -> None:
    """Raise ModelError with one line if `path` is not a readable GGUF file.

    The quick check reads the header; `deep` parses every tensor record with the
    `gguf` package and checks that the tensor data lies within the file (truncation).
    """
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not a GGUF file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from None
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF file (bad magic)")
    version = struct.unpack("<I", head[4:8])[0]
    if version not in (2, 3):
        raise ModelError(f"{path}: unsupported GGUF version {version}")
    if deep:
        _check_tensors(path)


def _check_tensors(path: Path) -> None:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        size = path.stat().st_size
        for t in reader.tensors:
            if t.data_offset + t.n_bytes > size:
                raise ValueError("tensor data past end of file")
    except Exception as exc:  # the reader raises many kinds on a cut file
        raise ModelError(f"{path} is not a complete GGUF file (truncated or corrupt: {exc})") from None



_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_DEPTH = 8  # arrays of arrays: real files nest none
_MAX_KEY = 1 << 16  # the spec's longest key (and more than any architecture name)
_MAX_WALK = 256 << 20  # the header a real model has before its block count is far shorter
_MAX_ITEMS = 1 << 22  # strings in one array: a vocabulary has a few hundred thousand
_INTEGERS = {0, 1, 2, 3, 4, 5, 10, 11}


class _BadHeader(Exception):
    pass


def block_count(path: Path) -> int | None:
    """The model's layer count from its GGUF metadata, or None where the file does not say.
    Reads the key-value header only, up to the key (the `gguf` reader parses every tensor
    record and token first: seconds, not milliseconds). Every length is checked against
    what is left of the file, so a garbage header ends in None, never a huge read."""
    try:
        with open(path, "rb") as fh:
            reader = _Header(fh, min(path.stat().st_size, _MAX_WALK))  # lengths past it: not a header
            if fh.read(4) != GGUF_MAGIC or reader.unpack("<I") not in (2, 3):
                return None
            reader.unpack("<Q")  # tensor count
            arch = None
            for _ in range(reader.count(reader.unpack("<Q"), 1)):
                key = reader.string()
                kind = reader.unpack("<I")
                if key == "general.architecture" and kind == _STRING:
                    arch = reader.string()
                elif arch is not None and key == f"{arch}.block_count" and kind in _INTEGERS:
                    n = int(reader.unpack(_SCALARS[kind]))
                    return n if n > 0 else None
                else:
                    reader.skip(kind)
    except (OSError, struct.error, UnicodeDecodeError, _BadHeader):
        pass  # a cut or foreign file: the loader gives the one-line error later
    return None


class _Header:
    def __init__(self, fh, size: int) -> None:
        self.fh, self.size = fh, size

    def left(self) -> int:
        return self.size - self.fh.tell()

    def count(self, n: int, item_bytes: int) -> int:
        """`n` items of at least `item_bytes` each, if the rest of the file can hold them."""
        if n * item_bytes > self.left():
            raise _BadHeader
        return n

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.fh.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.count(self.unpack("<Q"), 1)
        if n > _MAX_KEY:
            raise _BadHeader
        return self.fh.read(n).decode()

    def skip(self, kind: int, depth: int = 0) -> None:
        if kind in _SCALARS:
            self.fh.seek(struct.calcsize(_SCALARS[kind]), 1)
        elif kind == _STRING:
            self.fh.seek(self.count(self.unpack("<Q"), 1), 1)
        elif kind == _ARRAY and depth < _MAX_DEPTH:
            item, n = self.unpack("<I"), self.unpack("<Q")
            if item in _SCALARS:
                self.fh.seek(self.count(n, struct.calcsize(_SCALARS[item])), 1)
            else:
                if n > _MAX_ITEMS:
                    raise _BadHeader
                for _ in range(self.count(n, 8)):  # a string or an array takes 8 bytes at least
                    self.skip(item, depth + 1)
        else:
            raise _BadHeader
