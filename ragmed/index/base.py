"""The vector-store contract: what the pipeline, the evaluation harness and the service use of a store.

It is derived from :class:`ragmed.index.store.IndexStore` (the FAISS store) — the methods the rest of ragmed calls —
so the FAISS store satisfies it as it is; :class:`ragmed.index.pgvector.PgVectorStore` (PostgreSQL + pgvector) is the
second backend. ``tests/test_store_contract.py`` holds the contract tests every backend must pass.

Search contract: ``queries`` is ``(n, d)`` float32 (a single ``(d,)`` vector is one query), L2-normalised (cosine =
inner product); the answer is, per query, a list of :class:`~ragmed.index.store.Hit` best first, at most ``k``,
collapsed to one hit per case (the case's best image wins), merged across the requested domains by score. An unknown
``kind`` of vectors that the store does not hold answers empty lists; a wrong dimension raises ``ValueError``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np

from ragmed.index.records import CaseRecord, Hit

__all__ = ["VectorStore", "ManifestProperties", "CaseRecord", "Hit", "missing_members"]

MEMBERS = ("manifest", "version_dir", "domains", "encoders", "count", "cases", "iter_cases", "case_ids_with_hash",
           "skipped", "check_encoder", "search", "vectors", "info")


@runtime_checkable
class VectorStore(Protocol):
    """A loaded index, read-only and thread-safe for searching."""

    manifest: dict[str, Any]  # what built it: encoders, factory, domains, corpus checksum, calibration
    version_dir: Path  # the live version's directory (side files: BM25, calibration, router, fitted encoder)

    @property
    def domains(self) -> list[str]:
        """Names of the domain sub-indexes."""

    @property
    def encoders(self) -> dict[str, Any]:
        """``{role: {"id", "dim", "space", ...}}`` of the encoders that built the vectors (roles "image", "text")."""

    def count(self, kind: str = "cases") -> int:
        """Number of ``"cases"`` or ``"images"``."""

    def cases(self, case_ids: list[str]) -> dict[str, CaseRecord]:
        """The records of the given case ids (unknown ids are absent from the answer)."""

    def iter_cases(self, batch: int = 1000) -> Iterator[CaseRecord]:
        """Every case, in insertion order."""

    def case_ids_with_hash(self, content_hash: str) -> set[str]:
        """Cases holding an image with this pixel-content hash (to exclude a query image's own case)."""

    def skipped(self) -> list[dict[str, Any]]:
        """Rows the build skipped: ``{row, case_id, path, reason}``."""

    def check_encoder(self, role: str, encoder) -> None:
        """Raise :class:`~ragmed.errors.EncoderMismatchError` when ``encoder`` is not the one that built ``role``."""

    def search(self, kind: str, queries: np.ndarray, k: int, *, domains: list[str] | None = None,
               channel: str | None = None) -> list[list[Hit]]:
        """``kind`` "image" or "text"; per query a list of hits, best first (see the module docstring)."""

    def vectors(self, domain: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """All stored ``(ids, vectors)`` of one domain and kind."""

    def info(self) -> dict[str, Any]:
        """The manifest plus counts, for ``ragmed index info``."""


class ManifestProperties:
    """The contract's manifest-derived members, shared by every backend (each sets ``self.manifest``)."""

    manifest: dict[str, Any]

    @property
    def domains(self) -> list[str]:
        """Names of the domain sub-indexes, in the manifest's order."""
        return list(self.manifest.get("domains", {}).keys())

    @property
    def encoders(self) -> dict[str, Any]:
        """``{role: {"id", "dim", "space", ...}}`` of the encoders that built the vectors."""
        return self.manifest.get("encoders", {})


def missing_members(obj) -> list[str]:
    """Contract members ``obj`` lacks (``runtime_checkable`` checks names only; so does this, listing them)."""
    return [m for m in MEMBERS if not hasattr(obj, m)]
