"""Adaptive context selection: which retrieved cases reach the generator.

Registered selectors (chosen by ``select.name`` in the pipeline YAML):
- ``fixed``: the top ``k``;
- ``gap``: MMed-RAG's similarity-gap truncation — with scores S1 ≥ S2 ≥ … cut at the first i where
  log(S_i / S_{i+1}) > γ, keeping at least ``min_k`` and at most ``max_k``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from ragmed.errors import ConfigError
from ragmed.types import Evidence, Selection


class Selector(Protocol):
    name: str

    def select(self, candidates: list[Evidence], **overrides: Any) -> Selection: ...


class FixedK:
    name = "fixed"

    def __init__(self, k: int = 5):
        if k < 1:
            raise ConfigError("select.params.k must be ≥ 1")
        self.k = int(k)

    def select(self, candidates: list[Evidence], **overrides: Any) -> Selection:
        k = int(overrides.get("k", self.k))
        ranked = sorted(candidates, key=lambda e: -e.score)
        return Selection(kept=ranked[:k], rule="fixed", cut_at=min(k, len(ranked)),
                         scores=[e.score for e in ranked], reason=f"fixed top-{k}", params={"k": k})


class GapSelector:
    """MMed-RAG's rule (Xia et al., ICLR 2025, §3.2): cut where the log-ratio of consecutive scores exceeds γ."""

    name = "gap"

    def __init__(self, gamma: float = 0.1, min_k: int = 1, max_k: int = 5, eps: float = 1e-6):
        if gamma <= 0:
            raise ConfigError("select.params.gamma must be > 0")
        if not 1 <= min_k <= max_k:
            raise ConfigError("select.params need 1 ≤ min_k ≤ max_k")
        self.gamma, self.min_k, self.max_k, self.eps = float(gamma), int(min_k), int(max_k), float(eps)

    def cut_point(self, scores: list[float]) -> tuple[int, bool, float | None]:
        """(number kept, whether the gap rule fired, the gap that fired)."""
        s = scores[: self.max_k]
        for i in range(self.min_k - 1, len(s) - 1):
            a, b = max(s[i], self.eps), max(s[i + 1], self.eps)
            gap = math.log(a / b)
            if gap > self.gamma:
                return i + 1, True, gap
        return len(s), False, None

    def select(self, candidates: list[Evidence], **overrides: Any) -> Selection:
        ranked = sorted(candidates, key=lambda e: -e.score)
        scores = [e.score for e in ranked]
        n, fired, gap = self.cut_point(scores)
        reason = (f"log(S{n}/S{n + 1}) = {gap:.3f} > γ = {self.gamma}" if fired
                  else f"no gap > γ = {self.gamma} within the first {min(self.max_k, len(scores))}; kept max_k/all")
        return Selection(kept=ranked[:n], rule="gap", cut_at=n if fired else None, scores=scores, reason=reason,
                         params={"gamma": self.gamma, "min_k": self.min_k, "max_k": self.max_k})


_SELECTORS: dict[str, Callable[..., Selector]] = {"fixed": FixedK, "gap": GapSelector}


def register_selector(name: str, factory: Callable[..., Selector]) -> None:
    _SELECTORS[name] = factory


def list_selectors() -> list[str]:
    return sorted(_SELECTORS)


def create_selector(name: str, **params: Any) -> Selector:
    if name not in _SELECTORS:
        raise ConfigError(f"unknown selector {name!r}; registered: {', '.join(list_selectors())}")
    try:
        return _SELECTORS[name](**params)
    except TypeError as e:
        raise ConfigError(f"bad parameters for selector {name!r}: {e}") from e
