"""RULE's calibrated choice of k by Learn-then-Test (Angelopoulos et al. 2021; Xia et al., RULE, EMNLP 2024).

Calibration (offline, :func:`calibrate_k`): on a calibration split of n questions, for each candidate k the
generator answers with the top-k retrieved cases; ``correct[i, j]`` records whether question i was answered
correctly with ``ks[j]`` cases. For each k the empirical risk r̂_k = 1 − accuracy and its Hoeffding–Bentkus p-value
for the null "R(k) > α"::

    p_k = min( exp(−n · h(min(r̂_k, α), α)),  e · P[Binomial(n, α) ≤ ⌈n r̂_k⌉] ),
    h(a, b) = a log(a/b) + (1 − a) log((1 − a)/(1 − b))

The k whose nulls are rejected by a family-wise test at level δ — Bonferroni (p_k ≤ δ/|K|) or fixed-sequence
(test in the given order at δ, stop at the first failure) — are *certified*: each has risk ≤ α with probability
≥ 1 − δ over the calibration draw. The selector then uses the certified k with the lowest empirical risk (ties:
smallest k). When no k is certified at α the result says so (``certified: false``) and the selector uses the k with
the lowest empirical risk, with that fact in ``Selection.reason``.

The result is JSON (``save_calibration``), found by name: ``select: {name: rule, params: {calibration: NAME}}``
looks for ``NAME`` as a path, then ``<index>/select/NAME.json``, then ``pipelines/select/NAME.json``. Because the
per-k risks and n are stored, ``alpha`` / ``delta`` / ``method`` given in the YAML re-run the test without
re-calibrating.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragmed.errors import ConfigError
from ragmed.types import Evidence, Selection


def hb_pvalue(risk_hat: float, n: int, alpha: float) -> float:
    """Hoeffding–Bentkus p-value for H0: risk > alpha, given empirical risk ``risk_hat`` over n samples."""
    from scipy.stats import binom

    if n <= 0:
        return 1.0
    a = min(risk_hat, alpha)
    if a <= 0:
        hoeffding = math.exp(-n * math.log(1 / (1 - alpha)))  # h(0, α) = log(1/(1−α))
    else:
        h = a * math.log(a / alpha) + (1 - a) * math.log((1 - a) / (1 - alpha))
        hoeffding = math.exp(-n * h)
    bentkus = math.e * float(binom.cdf(math.ceil(n * risk_hat - 1e-9), n, alpha))
    return float(min(1.0, hoeffding, bentkus))


def ltt_test(risks: list[float], n: int, alpha: float, delta: float, method: str = "bonferroni",
             order: list[int] | None = None) -> tuple[list[float], list[bool]]:
    """p-values and accept flags (null rejected = risk ≤ α certified) for candidate risks."""
    if not 0 < alpha < 1 or not 0 < delta < 1:
        raise ConfigError("select.params: alpha and delta must be in (0, 1)")
    p = [hb_pvalue(r, n, alpha) for r in risks]
    acc = [False] * len(risks)
    if method == "bonferroni":
        acc = [pi <= delta / len(risks) for pi in p]
    elif method == "fixed-sequence":
        for j in order or list(range(len(risks))):
            if p[j] <= delta:
                acc[j] = True
            else:
                break
    else:
        raise ConfigError(f"select.params.method must be 'bonferroni' or 'fixed-sequence', not {method!r}")
    return p, acc


def calibrate_k(correct: np.ndarray, ks: list[int], *, alpha: float, delta: float, method: str = "bonferroni",
                order: list[int] | None = None, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Learn-then-Test over candidate k. ``correct``: (n, len(ks)) 0/1 array. ``order``: indices into ``ks`` for
    fixed-sequence testing (default: the given order of ``ks``). Returns the JSON-able calibration result."""
    c = np.asarray(correct, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != len(ks) or c.shape[0] == 0:
        raise ConfigError(f"calibrate_k: correct must be (n, {len(ks)}) with n ≥ 1, got {c.shape}")
    n = int(c.shape[0])
    risks = (1.0 - c.mean(axis=0)).tolist()
    return _result(ks, risks, n, alpha, delta, method, order, meta or {})


def _result(ks, risks, n, alpha, delta, method, order, meta) -> dict[str, Any]:
    p, acc = ltt_test(risks, n, alpha, delta, method, order)
    cands = [{"k": int(k), "risk": round(float(r), 6), "p_value": float(pv), "accepted": bool(a)}
             for k, r, pv, a in zip(ks, risks, p, acc)]
    pool = [c for c in cands if c["accepted"]] or cands
    best = min(pool, key=lambda c: (c["risk"], c["k"]))
    return {"rule": "ltt", "alpha": alpha, "delta": delta, "method": method, "order": order, "n": n,
            "candidates": cands, "k": best["k"], "certified": any(c["accepted"] for c in cands),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta}


def retest(cal: dict[str, Any], *, alpha: float | None = None, delta: float | None = None,
           method: str | None = None) -> dict[str, Any]:
    """Re-run the family-wise test of a stored calibration at another α / δ / method."""
    ks = [c["k"] for c in cal["candidates"]]
    risks = [c["risk"] for c in cal["candidates"]]
    meta = {k: v for k, v in cal.items() if k not in ("rule", "alpha", "delta", "method", "order", "n", "candidates",
                                                      "k", "certified", "created")}
    return _result(ks, risks, cal["n"], alpha if alpha is not None else cal["alpha"],
                   delta if delta is not None else cal["delta"], method or cal["method"], cal.get("order"), meta)


def save_calibration(cal: dict[str, Any], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(cal, indent=2))
    os.replace(tmp, p)
    return p


def find_calibration(name: str, search_dirs: list[str | Path] = ()) -> Path:
    p = Path(os.path.expanduser(name))
    if p.suffix == ".json" and p.exists():
        return p
    tried = [str(p)] if p.suffix == ".json" else []
    for d in search_dirs:
        cand = Path(d) / "select" / (name if name.endswith(".json") else f"{name}.json")
        tried.append(str(cand))
        if cand.exists():
            return cand
    raise ConfigError(f"select.params.calibration: no calibration named {name!r} (looked in: {', '.join(tried)})",
                      remedy="run `python eval/vqa_selection.py` (it writes one) or calibrate_k + save_calibration")


class LTTSelector:
    """Keeps the top k, k calibrated by Learn-then-Test (see the module docstring)."""

    name = "rule"

    def __init__(self, calibration: str | dict | None = None, alpha: float | None = None, delta: float | None = None,
                 method: str | None = None, search_dirs: list[str | Path] = ()):
        if calibration is None:
            raise ConfigError("select `rule` needs params.calibration: the name or path of a calibration JSON")
        if isinstance(calibration, dict):
            cal, src = calibration, "inline"
        else:
            path = find_calibration(str(calibration), list(search_dirs))
            try:
                cal = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ConfigError(f"cannot read the calibration: {e}", path=str(path)) from e
            src = str(path)
        if cal.get("rule") != "ltt" or "candidates" not in cal:
            raise ConfigError("not a Learn-then-Test calibration (no rule: ltt / candidates)", path=src)
        if alpha is not None or delta is not None or method is not None:
            cal = retest(cal, alpha=alpha, delta=delta, method=method)
        self.cal, self.source = cal, src
        self.k = int(cal["k"])

    def select(self, candidates: list[Evidence], **overrides: Any) -> Selection:
        k = int(overrides.get("k", self.k))
        ranked = sorted(candidates, key=lambda e: -e.score)
        c = self.cal
        chosen = next((x for x in c["candidates"] if x["k"] == k), None)
        if c["certified"]:
            why = (f"Learn-then-Test k={k}: calibrated risk {chosen['risk']:.3f}, p={chosen['p_value']:.2g} ≤ "
                   f"δ-test ({c['method']}); risk ≤ α={c['alpha']} w.p. ≥ {1 - c['delta']:.2f} (n={c['n']})"
                   if chosen else f"k={k} (override)")
        else:
            why = (f"no k certified at α={c['alpha']}, δ={c['delta']} on n={c['n']}: using the lowest empirical risk "
                   f"k={k} (uncertified)")
        return Selection(kept=ranked[:k], rule="rule-ltt", cut_at=min(k, len(ranked)),
                         scores=[e.score for e in ranked], reason=why,
                         params={"k": k, "alpha": c["alpha"], "delta": c["delta"], "method": c["method"],
                                 "certified": c["certified"], "calibration": self.source})
