"""Turn what a user typed (a catalog id, an alias, or a path) into a GGUF path."""

from __future__ import annotations

from pathlib import Path

from tts_tui.catalog.entries import Catalog, load_catalog
from tts_tui.catalog.fetch import Progress, fetch
from tts_tui.catalog.gguf_file import check_gguf
from tts_tui import paths
from tts_tui.errors import ModelError


def resolve_model(
    name: str | None,
    role: str = "policy",
    fetch_missing: bool = True,
    on_progress: Progress | None = None,
    catalog: Catalog | None = None,
) -> Path:
    """A catalog id/alias (fetched on first use) or a path to any GGUF file."""
    catalog = catalog or load_catalog()
    entry = catalog.default(role) if not name else catalog.get(name)
    if entry is not None:
        mdir = paths.models_dir()
        if not entry.is_present(mdir):
            if not fetch_missing:
                raise ModelError(f"{entry.id} is not downloaded (run: tts models pull {entry.id})")
            fetch(entry, mdir, on_progress or (lambda d, t, w: None))
        return entry.path(mdir)
    path = Path(name).expanduser()
    if not path.exists():
        known = ", ".join(catalog.ids())
        raise ModelError(f"no such model file or catalog id: {name} (catalog: {known})")
    check_gguf(path)
    return path
