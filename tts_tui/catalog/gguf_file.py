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
