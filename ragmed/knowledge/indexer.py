"""Map linked concepts to a corpus's own index vocabulary, learned from labelled reports.

A report collection often carries its own index terms (IU X-ray: MeSH headings mixed with in-house tags such as
"opacity" or "markings"), whose granularity differs from any ontology: indexers code "lung" for "hypoinflation",
"calcinosis" for "calcified", and leave out normal anatomy. :class:`IndexTermMapper` learns, from reports with their
terms, one logistic-regression classifier per term over what the linker found in a report (:func:`mention_features`),
so that a term's evidence is weighed against the others instead of firing from any single concept. Nothing here is
specific to one corpus: fit it on the labelled half of a collection, choose its threshold on held-out folds of that
half (:func:`cross_val_proba`, :func:`choose_threshold`), and score the other half once.

Features of a report (binary): each linked concept that is asserted (``a:ID``) or hedged (``u:ID``), the words it was
matched by (``w:…``, so "densities" and "opacities" can map differently although both link to one concept), and pairs
of asserted or hedged concepts in one sentence (``p:ID+ID``). Negated mentions give no feature: the report denies them.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Sequence

from ragmed.knowledge.mention import LinkedConcept
from ragmed.knowledge.text import sentence_ids, tokenize

FEATURE_SETS = ("concepts", "concepts+status", "full")


def mention_features(text: str, mentions: Sequence[LinkedConcept], kind: str = "full") -> dict[str, float]:
    """Binary features of one report's linked mentions (see the module docstring). ``kind``: ``concepts`` (ids
    only), ``concepts+status`` (ids split by asserted / hedged, and sentence pairs) or ``full`` (also the matched
    words)."""
    if kind not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {kind!r}; one of {FEATURE_SETS}")
    toks = tokenize(text)
    sid = dict(zip((t.start for t in toks), sentence_ids(text, toks)))
    out: dict[str, float] = {}
    by_sent: dict[int, set[str]] = {}
    for m in mentions:
        if m.negated:
            continue
        st = "a" if kind == "concepts" or not m.uncertain else "u"
        out[f"{st}:{m.id}"] = 1.0
        if kind == "full":
            out[f"w{st}:" + " ".join(t.norm for t in tokenize(m.text or m.name))] = 1.0
        if kind != "concepts":
            by_sent.setdefault(sid.get(m.span[0], -1), set()).add(m.id)
    for ids in by_sent.values():
        s = sorted(ids)
        out.update((f"p:{a}+{b}", 1.0) for k, a in enumerate(s) for b in s[k + 1:])
    return out


class IndexTermMapper:
    """One L2-regularised logistic regression per index term seen in at least ``min_support`` training reports."""

    def __init__(self, C: float = 1.0, min_support: int = 5):
        self.C, self.min_support = C, min_support
        self.terms: list[str] = []
        self._vec = None
        self._models: list = []

    def fit(self, feats: Sequence[dict[str, float]], labels: Sequence[Iterable[str]]) -> "IndexTermMapper":
        from sklearn.feature_extraction import DictVectorizer
        from sklearn.linear_model import LogisticRegression

        if len(feats) != len(labels):
            raise ValueError(f"{len(feats)} feature dicts but {len(labels)} label sets")
        labels = [set(x) for x in labels]
        counts = Counter(t for s in labels for t in s)
        self.terms = sorted(t for t, c in counts.items() if c >= self.min_support and c < len(labels))
        self._vec = DictVectorizer()
        X = _int32(self._vec.fit_transform(feats))
        self._models = []
        for t in self.terms:
            y = [t in s for s in labels]
            self._models.append(LogisticRegression(C=self.C, solver="liblinear", max_iter=1000).fit(X, y))
        return self

    def predict_proba(self, feats: Sequence[dict[str, float]]) -> list[dict[str, float]]:
        """For each report, term → probability."""
        if self._vec is None:
            raise RuntimeError("IndexTermMapper: call fit() first")
        if not feats:
            return []
        X = _int32(self._vec.transform(feats))
        cols = [m.predict_proba(X)[:, 1] for m in self._models]
        return [{t: float(c[i]) for t, c in zip(self.terms, cols)} for i in range(len(feats))]

    def predict(self, feats: Sequence[dict[str, float]], threshold: float) -> list[set[str]]:
        return [{t for t, p in d.items() if p >= threshold} for d in self.predict_proba(feats)]


def _int32(X):
    """liblinear wants 32-bit sparse indices; some scipy builds give 64-bit ones."""
    import numpy as np

    X = X.tocsr()
    X.indices = X.indices.astype(np.int32)
    X.indptr = X.indptr.astype(np.int32)
    return X


def cross_val_proba(feats: Sequence[dict[str, float]], labels: Sequence[set[str]], *, folds: int = 5, seed: int = 0,
                    C: float = 1.0, min_support: int = 5) -> list[dict[str, float]]:
    """Out-of-fold probabilities: each report scored by a mapper fitted on the other folds (seeded shuffle)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(feats))
    out: list[dict[str, float]] = [{} for _ in feats]
    for k in range(folds):
        held = set(order[k::folds].tolist())
        tr = [i for i in range(len(feats)) if i not in held]
        m = IndexTermMapper(C=C, min_support=min_support).fit([feats[i] for i in tr], [labels[i] for i in tr])
        te = sorted(held)
        for i, d in zip(te, m.predict_proba([feats[i] for i in te])):
            out[i] = d
    return out


def score_sets(pairs: Sequence[tuple[set[str], set[str]]]) -> dict:
    """Micro precision / recall / F1 of (predicted, gold) term sets."""
    tp = sum(len(p & g) for p, g in pairs)
    n_pred = sum(len(p) for p, _ in pairs)
    n_gold = sum(len(g) for _, g in pairs)
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return {"reports": len(pairs), "predicted": n_pred, "correct": tp, "gold_terms": n_gold,
            "precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0}


def wilson_lower(correct: int, n: int, z: float = 1.645) -> float:
    """One-sided lower confidence bound (95 % with z = 1.645) of a proportion (Wilson score interval)."""
    if n == 0:
        return 0.0
    p = correct / n
    d = 1 + z * z / n
    c = p + z * z / (2 * n)
    return (c - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / d


THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))


def precision_recall_curve(probs: Sequence[dict[str, float]], labels: Sequence[set[str]],
                           thresholds: Sequence[float] = THRESHOLDS) -> list[dict]:
    return [{"threshold": th, **score_sets([({t for t, p in d.items() if p >= th}, set(g))
                                             for d, g in zip(probs, labels)])} for th in thresholds]


def choose_threshold(curve: Sequence[dict], min_precision: float = 0.75) -> dict:
    """The threshold of best F1 among those whose precision's 95 % lower bound (:func:`wilson_lower`) is at least
    ``min_precision``; if none qualifies, the one of highest precision. Returns that curve point."""
    ok = [c for c in curve if c["predicted"] and wilson_lower(c["correct"], c["predicted"]) >= min_precision]
    if not ok:
        return max(curve, key=lambda c: (c["precision"], c["recall"]))
    return max(ok, key=lambda c: (c["f1"], c["precision"]))


__all__ = ["IndexTermMapper", "mention_features", "cross_val_proba", "precision_recall_curve", "choose_threshold",
           "score_sets", "wilson_lower", "FEATURE_SETS", "THRESHOLDS"]
