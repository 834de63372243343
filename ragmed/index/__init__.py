"""The FAISS store: an index directory with per-domain FAISS indexes and SQLite metadata (see ``store.py``)."""
from __future__ import annotations

from ragmed.index.build import BuildReport, build_index
from ragmed.index.store import CaseRecord, Hit, IndexStore, open_index

__all__ = ["build_index", "BuildReport", "IndexStore", "open_index", "Hit", "CaseRecord"]
