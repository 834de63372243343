"""The FAISS store: an index directory with per-domain FAISS indexes and SQLite metadata (see ``store.py``)."""
from __future__ import annotations

from ragmed.index.build import BuildReport, build_index
from ragmed.index.store import STORES, CaseRecord, Hit, IndexStore, open_index, read_manifest, resolve_version_dir

__all__ = ["build_index", "BuildReport", "IndexStore", "open_index", "Hit", "CaseRecord", "read_manifest", "STORES",
           "resolve_version_dir"]
