"""Adaptive context selection: which retrieved cases reach the generator.

Registered selectors (chosen by ``select.name`` in the pipeline YAML):
- ``fixed``: the top ``k``;
- ``gap``: MMed-RAG's similarity-gap truncation — with scores S1 ≥ S2 ≥ … cut at the first i where
  log(S_i / S_{i+1}) > γ, keeping at least ``min_k`` and at most ``max_k``. The scores are, by default
  (``by: similarity``), each candidate's *calibrated similarity* (``Evidence.similarity``: the fused quantile
  position of its raw channel similarities in the index's own leave-one-out distribution, in [0, 1]; see
  ``ragmed.pipeline.hybrid``). Reciprocal-rank-fusion scores are not used by default: they are sums of
  1/(60 + rank), so within one channel consecutive log-ratios are ≤ log(62/61) ≈ 0.016 (a γ of 0.1 never fires),
  and across channels the big steps only say how many channels found a case, not how similar it is.
  ``by: score`` uses ``Evidence.score`` (the fused ranking score) instead.
- ``rule`` (alias ``ltt``): RULE's calibrated k by Learn-then-Test (``ragmed.select.ltt``): the k certified on a
  calibration split so that risk (1 − accuracy) ≤ α with probability ≥ 1 − δ; the calibration JSON is named by
  ``calibration:`` in the YAML.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from ragmed.errors import ConfigError
from ragmed.registry import Registry
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

    def __init__(self, gamma: float = 0.1, min_k: int = 1, max_k: int = 5, eps: float = 1e-3, by: str = "similarity"):
        if by not in ("similarity", "score"):
            raise ConfigError("select.params.by must be 'similarity' or 'score'")
        self.by = by
        if gamma <= 0:
            raise ConfigError("select.params.gamma must be > 0")
        if not 1 <= min_k <= max_k:
            raise ConfigError("select.params need 1 ≤ min_k ≤ max_k")
        self.gamma, self.min_k, self.max_k, self.eps = float(gamma), int(min_k), int(max_k), float(eps)

    def cut_point(self, scores: list[float]) -> tuple[int, bool, float | None]:
        """(number kept, whether the gap rule fired, the gap that fired)."""
        return _cut(scores, self.gamma, self.min_k, self.max_k, self.eps)

    def key(self, e: Evidence) -> float:
        if self.by == "similarity" and e.similarity is not None:
            return float(e.similarity)
        return float(e.score)

    def select(self, candidates: list[Evidence], **overrides: Any) -> Selection:
        gamma = float(overrides.get("gamma", self.gamma))
        ranked = sorted(candidates, key=lambda e: -self.key(e))
        scores = [round(self.key(e), 6) for e in ranked]
        used = "similarity" if self.by == "similarity" and any(e.similarity is not None for e in ranked) else "score"
        n, fired, gap = _cut(scores, gamma, self.min_k, self.max_k, self.eps)
        what = "calibrated similarity" if used == "similarity" else "score"
        reason = (f"log(S{n}/S{n + 1}) = {gap:.3f} > γ = {gamma} on {what}" if fired
                  else f"no gap > γ = {gamma} within the first {min(self.max_k, len(scores))} {used} scores; "
                       f"kept {n}")
        return Selection(kept=ranked[:n], rule="gap", cut_at=n if fired else None, scores=scores, reason=reason,
                         params={"gamma": gamma, "min_k": self.min_k, "max_k": self.max_k, "by": used})


def _cut(scores: list[float], gamma: float, min_k: int, max_k: int, eps: float) -> tuple[int, bool, float | None]:
    s = scores[:max_k]
    for i in range(min_k - 1, len(s) - 1):
        a, b = max(s[i], eps), max(s[i + 1], eps)
        gap = math.log(a / b)
        if gap > gamma:
            return i + 1, True, gap
    return len(s), False, None


SELECTORS = Registry("selector")
SELECTORS.register("fixed", FixedK)
SELECTORS.register("gap", GapSelector)
SELECTORS.register("rule", "ragmed.select.ltt:LTTSelector")
SELECTORS.register("ltt", "ragmed.select.ltt:LTTSelector")


def register_selector(name: str, factory: Callable[..., Selector] | str) -> None:
    SELECTORS.register(name, factory)


def list_selectors() -> list[str]:
    return SELECTORS.names()


def create_selector(name: str, **params: Any) -> Selector:
    return SELECTORS.create(name, **params)
