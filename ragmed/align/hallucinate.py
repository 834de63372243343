"""MMedPO-style dispreferred answers: a plausible hallucination of the ground truth, with a clinical-relevance weight.

MMedPO (Zhu et al. 2025) writes hallucinated answers with a strong LLM and scores their clinical relevance with a
medical LLM judge; neither is available offline. ragmed's stand-ins, in the order tried:

==================  ======================================================  ========================================
kind                how the dispreferred answer is made                     raw relevance r (heuristic, in (0, 1])
==================  ======================================================  ========================================
``negation``        a yes/no answer flipped ("Yes." → "No.")                1.0: the finding's presence is reversed
``option-swap``     the other option of an either/or question               1.0: the other answer the question allows
``laterality``      left ↔ right (and upper ↔ lower, anterior ↔ posterior)  0.8: same finding, wrong side
``kg-swap``         a finding linked in the knowledge graph swapped for a   by graph distance d over is_a edges: a
                    related concept: a sibling under a shared parent (d=2)  sibling (d=2, another finding of the
                    or, without one, its parent (d=1)                       same kind) 1.0; the parent (d=1, the
                                                                            answer made vaguer) 0.5
==================  ======================================================  ========================================

Weights: :func:`normalise_weights` divides the raw relevances of the hallucination pairs by their mean (so the
average hallucination pair weighs 1, like every RAG-PT pair), then clips them to ``[0.5, 2.0]`` and rescales to mean
1, alternately, until both hold. Pairs of the other kinds weigh 1. The trainer multiplies each pair's DPO loss by
its weight.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ragmed.eval.normalize import normalize_answer

W_MIN, W_MAX = 0.5, 2.0
_SIDES = [("left", "right"), ("upper", "lower"), ("anterior", "posterior"), ("superior", "inferior"),
          ("medial", "lateral")]


@dataclass
class Hallucination:
    text: str
    kind: str
    relevance: float
    detail: str = ""


def as_answer(text: str) -> str:
    """The answer as a completion: trimmed, first letter upper-case, one full stop (the form the generator's
    constrained closed answers take)."""
    t = re.sub(r"\s+", " ", str(text or "")).strip().rstrip(".")
    return (t[:1].upper() + t[1:] + ".") if t else ""


def _flip_sides(text: str) -> str | None:
    swap = {}
    for a, b in _SIDES:
        swap[a], swap[b] = b, a
    out = re.sub(r"\b(" + "|".join(swap) + r")\b", lambda m: _case_like(swap[m.group(1).lower()], m.group(1)), text,
                 flags=re.I)
    return out if out != text else None


def _case_like(word: str, like: str) -> str:
    return word.capitalize() if like[:1].isupper() else word


def kg_swap(kg, text: str, max_depth: int = 3) -> tuple[str, str, int] | None:
    """``text`` with its first linked concept replaced by the nearest related concept (a sibling under a shared
    ``is_a`` parent, else a parent): (new text, "A → B", graph distance)."""
    if kg is None:
        return None
    try:
        links = kg.link(text)
    except Exception:  # noqa: BLE001 - a graph that cannot link this text gives no swap
        return None
    for lc in links:
        if lc.negated:
            continue
        start, end = lc.span
        for parent in kg.parents(lc.id)[:3]:
            sibs = [c for _, c in kg.neighbours(parent, "is_a", direction="in") if c != lc.id]
            for s in sorted(sibs):
                name = kg.concept(s)["name"]
                if normalize_answer(name) != normalize_answer(text[start:end]):
                    return text[:start] + name.lower() + text[end:], f"{lc.name} → {name}", 2
        for parent in kg.parents(lc.id)[:1]:
            name = kg.concept(parent)["name"]
            return text[:start] + name.lower() + text[end:], f"{lc.name} → {name}", 1
    return None


def hallucinations(question: str, gold: str, answer_type: str, *, options: list[str] | None = None,
                   kg=None) -> list[Hallucination]:
    """Plausible wrong answers to ``question`` whose ground truth is ``gold`` (at most one per kind, most relevant
    kind first)."""
    g = normalize_answer(gold)
    out: list[Hallucination] = []
    closed = (answer_type or "").strip().lower() == "closed"
    if closed and g in ("yes", "no"):
        out.append(Hallucination(as_answer("no" if g == "yes" else "yes"), "negation", 1.0, f"{g} → flipped"))
        return out
    if options and g in options:
        other = [o for o in options if o != g]
        if other:
            out.append(Hallucination(as_answer(other[0]), "option-swap", 1.0, f"{g} → {other[0]}"))
    flipped = _flip_sides(gold)
    if flipped:
        out.append(Hallucination(as_answer(flipped), "laterality", 0.8, "side flipped"))
    sw = kg_swap(kg, gold)
    if sw:
        text, detail, d = sw
        if normalize_answer(text) != g:
            out.append(Hallucination(as_answer(text), "kg-swap", 1.0 if d >= 2 else 0.5, detail))
    return out


def normalise_weights(raw: list[float], lo: float = W_MIN, hi: float = W_MAX) -> list[float]:
    """Mean-1 weights from raw relevances: r / mean(r), then clip to [lo, hi] and rescale to mean 1, repeated until
    both hold (a few rounds; the clip is the last step, so no weight ever leaves [lo, hi])."""
    if not raw:
        return []
    m = sum(raw) / len(raw)
    if m <= 0:
        return [1.0] * len(raw)
    w = [r / m for r in raw]
    for _ in range(50):
        w = [min(hi, max(lo, x)) for x in w]
        m = sum(w) / len(w)
        if abs(m - 1) < 1e-6:
            break
        w = [x / m for x in w]
    return [round(min(hi, max(lo, x)), 4) for x in w]
