"""Corpora: manifests (CSV / JSONL) and VQA sets (VQA-RAD, SLAKE) read into :class:`Case` records."""
from __future__ import annotations

from ragmed.corpus.manifest import Case, Corpus, SkippedRow, read_corpus
from ragmed.corpus.sections import split_sections

__all__ = ["Case", "Corpus", "SkippedRow", "read_corpus", "split_sections"]
