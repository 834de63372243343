"""Rank and score fusion of the retrieval channels into one evidence list."""
from __future__ import annotations

from ragmed.errors import ConfigError
from ragmed.types import Evidence


def fuse(channels: dict[str, list], exclude: set[str], *, method: str = "rrf", rrf_k: int = 60,
         weights: dict[str, float] | None = None, k: int = 10, calibrate=None) -> list[Evidence]:
    """Fuse per-channel hit lists (each best first) into one list of evidence, duplicates merged; each channel's raw
    score and rank stay on the evidence (``channels`` / ``ranks``).

    ``rrf``: reciprocal-rank fusion (Cormack et al. 2009), score = Σ_channel w / (rrf_k + rank).
    ``score``: calibrated score fusion, score = Σ_channel w · cal(score) / Σ_channel w over the channels that ran
    (a channel that did not return the case contributes 0).
    Either way ``similarity`` is that calibrated fused score (``calibrate(domain, channel, raw) -> [0, 1]``; the raw
    score clipped to [0, 1] without a calibrator)."""
    if method not in ("rrf", "score"):
        raise ConfigError(f"retrieval.fusion must be 'rrf' or 'score', not {method!r}")
    weights = weights or {}
    cal = calibrate or (lambda d, ch, s: float(min(1.0, max(0.0, s))))
    merged: dict[str, Evidence] = {}
    rrf: dict[str, float] = {}
    csum: dict[str, float] = {}
    active = [ch for ch, hits in channels.items()]
    wsum = sum(weights.get(ch, 1.0) for ch in active) or 1.0
    for ch, hits in channels.items():
        w = weights.get(ch, 1.0)
        rank = 0
        for h in hits:
            if h.case_id in exclude:
                continue
            e = merged.get(h.case_id)
            if e is not None and ch in e.channels:
                continue
            rank += 1
            if e is None:
                e = merged[h.case_id] = Evidence(case_id=h.case_id, score=0.0, domain=h.domain, image=h.image)
                rrf[h.case_id] = csum[h.case_id] = 0.0
            e.channels[ch] = round(float(h.score), 6)
            e.ranks[ch] = rank
            rrf[h.case_id] += w / (rrf_k + rank)
            csum[h.case_id] += w * cal(h.domain, ch, float(h.score))
            if h.image and not e.image:
                e.image = h.image
    for cid, e in merged.items():
        e.similarity = round(csum[cid] / wsum, 6)
        e.score = round(rrf[cid] if method == "rrf" else e.similarity, 6)
    return sorted(merged.values(), key=lambda e: (-e.score, -(e.similarity or 0.0)))[:k]
