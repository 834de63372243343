"""Answer normalisation for VQA scoring, kept under its old import path: see :mod:`ragmed.text.normalize`."""
from __future__ import annotations

from ragmed.text.normalize import ARTICLES, answer_tokens, normalize_answer

__all__ = ["ARTICLES", "answer_tokens", "normalize_answer"]
