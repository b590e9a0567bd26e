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


def block_count(path: Path) -> int | None:
    """The model's layer count from its GGUF metadata, or None where the file does not say.
    Reads the key-value header only, up to the key (the `gguf` reader parses every tensor
    record and token first: seconds, not milliseconds)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != GGUF_MAGIC:
                return None
            _, _, n_kv = struct.unpack("<IQQ", fh.read(20))
            if n_kv > 1 << 20:
                return None  # not a real header: never walk a garbage count
            arch = None
            for _ in range(n_kv):
                key = _read_str(fh)
                kind = struct.unpack("<I", fh.read(4))[0]
                if key == "general.architecture" and kind == _STRING:
                    arch = _read_str(fh)
                elif arch is not None and key == f"{arch}.block_count" and kind in _SCALARS:
                    return int(_read_scalar(fh, kind))
                else:
                    _skip_value(fh, kind)
    except (OSError, struct.error, KeyError, UnicodeDecodeError):
        pass  # a cut or foreign file: the loader gives the one-line error later
    return None


def _read_str(fh) -> str:
    (n,) = struct.unpack("<Q", fh.read(8))
    return fh.read(n).decode()


def _read_scalar(fh, kind: int):
    fmt = _SCALARS[kind]
    return struct.unpack(fmt, fh.read(struct.calcsize(fmt)))[0]


def _skip_value(fh, kind: int) -> None:
    if kind == _STRING:
        fh.seek(struct.unpack("<Q", fh.read(8))[0], 1)
    elif kind == _ARRAY:
        item, n = struct.unpack("<IQ", fh.read(12))
        if item in _SCALARS:
            fh.seek(n * struct.calcsize(_SCALARS[item]), 1)
        else:
            for _ in range(n):
                _skip_value(fh, item)
    else:
        fh.seek(struct.calcsize(_SCALARS[kind]), 1)
