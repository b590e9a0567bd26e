"""The model catalog (data in models/catalog.toml) and the code that fetches and checks models."""

from tts_tui.catalog.entries import Catalog, ModelEntry, load_catalog
from tts_tui.catalog.resolve import resolve_model

__all__ = ["Catalog", "ModelEntry", "load_catalog", "resolve_model"]
