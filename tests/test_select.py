"""Adaptive context selection: MMed-RAG's gap rule (on calibrated similarity) and RULE's Learn-then-Test k."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ragmed.errors import ConfigError
from ragmed.types import Evidence


def ev(scores, sims=None):
    sims = sims or [None] * len(scores)
    return [Evidence(case_id=f"c{i}", score=s, similarity=m) for i, (s, m) in enumerate(zip(scores, sims))]


# --- gap ------------------------------------------------------------------------------------------------------
def test_gap_cuts_at_first_large_log_ratio_of_similarity():
    from ragmed.select import GapSelector

    sel = GapSelector(gamma=0.2, min_k=1, max_k=5).select(ev([0.5, 0.4, 0.3, 0.2, 0.1], [0.9, 0.85, 0.5, 0.45, 0.4]))
    assert [e.case_id for e in sel.kept] == ["c0", "c1"]
    assert sel.cut_at == 2 and sel.rule == "gap" and sel.params["by"] == "similarity"
    assert sel.scores[:3] == [0.9, 0.85, 0.5]
    assert f"{math.log(0.85 / 0.5):.3f}" in sel.reason


def test_gap_floor_and_maximum():
    from ragmed.select import GapSelector

    sims = [0.9, 0.3, 0.29, 0.28, 0.27, 0.26, 0.25]
    assert GapSelector(gamma=0.2, min_k=1, max_k=5).select(ev([1] * 7, sims)).cut_at == 1
    floor = GapSelector(gamma=0.2, min_k=2, max_k=5).select(ev([1] * 7, sims))
    assert floor.cut_at is None and len(floor.kept) == 5  # the only big gap is before the floor; max_k caps
    assert len(GapSelector(gamma=5, min_k=1, max_k=3).select(ev([1] * 7, sims)).kept) == 3


def test_gap_by_score_and_fallback_without_similarity():
    from ragmed.select import GapSelector

    sel = GapSelector(gamma=0.2, by="score").select(ev([0.9, 0.3, 0.2], [0.1, 0.1, 0.1]))
    assert sel.cut_at == 1 and sel.params["by"] == "score"
    sel = GapSelector(gamma=0.2).select(ev([0.9, 0.3, 0.2]))  # no similarity on the evidence: uses score
    assert sel.cut_at == 1 and sel.params["by"] == "score"
    with pytest.raises(ConfigError):
        GapSelector(by="rank")


def test_gap_never_fires_on_single_channel_rrf_scores():
    """Why the gap rule works on calibrated similarity: consecutive RRF scores differ by < log(62/61)."""
    from ragmed.index.store import Hit
    from ragmed.pipeline import fuse
    from ragmed.select import GapSelector

    hits = {"a": [Hit(f"c{i}", 0.9 - i / 50, "a") for i in range(5)] + [Hit(f"c{i}", 0.2 - i / 100, "a") for i in range(5, 10)]}
    fused = fuse(hits, set(), method="rrf", k=10)
    assert GapSelector(gamma=0.1, by="score", max_k=10).select(fused).cut_at is None
    # the calibrated similarity (here the raw score, no calibrator) does show the drop after c4
    assert GapSelector(gamma=0.1, max_k=10).select(fused).cut_at == 5


# --- Learn-then-Test ----------------------------------------------------------------------------------------
def test_hb_pvalue_matches_its_formula():
    from scipy.stats import binom

    from ragmed.select.ltt import hb_pvalue

    n, r, a = 100, 0.1, 0.2
    h = r * math.log(r / a) + (1 - r) * math.log((1 - r) / (1 - a))
    expected = min(math.exp(-n * h), math.e * binom.cdf(10, n, a))
    assert hb_pvalue(r, n, a) == pytest.approx(expected)
    assert hb_pvalue(0.3, 100, 0.2) == 1.0  # risk above α: no evidence against the null
    assert hb_pvalue(0.1, 1000, 0.2) < hb_pvalue(0.1, 100, 0.2) < hb_pvalue(0.1, 20, 0.2)


def test_calibrate_k_certifies_only_low_risk_k():
    from ragmed.select.ltt import calibrate_k

    rng = np.random.default_rng(0)
    n = 400
    acc = {1: 0.55, 3: 0.92, 5: 0.88, 10: 0.7}
    correct = np.stack([rng.random(n) < acc[k] for k in acc], axis=1)
    cal = calibrate_k(correct, list(acc), alpha=0.2, delta=0.1)
    accepted = [c["k"] for c in cal["candidates"] if c["accepted"]]
    assert accepted == [3, 5] and cal["k"] == 3 and cal["certified"]
    for c in cal["candidates"]:
        assert c["accepted"] == (c["p_value"] <= 0.1 / 4)
    strict = calibrate_k(correct, list(acc), alpha=0.02, delta=0.1)
    assert not strict["certified"] and strict["k"] == 3  # falls back to the lowest empirical risk, says so


def test_fixed_sequence_stops_at_first_failure():
    from ragmed.select.ltt import ltt_test

    p, acc = ltt_test([0.05, 0.5, 0.05], 500, 0.2, 0.1, method="fixed-sequence")
    assert acc == [True, False, False] and p[2] < 0.1  # k3 would pass alone, but the sequence stopped
    _, acc = ltt_test([0.05, 0.5, 0.05], 500, 0.2, 0.1, method="fixed-sequence", order=[2, 0, 1])
    assert acc == [True, False, True]
    with pytest.raises(ConfigError):
        ltt_test([0.1], 10, 1.5, 0.1)


def test_ltt_selector_loads_by_name_and_retests(tmp_path):
    from ragmed.select import create_selector
    from ragmed.select.ltt import calibrate_k, save_calibration

    correct = np.array([[0, 1, 1]] * 180 + [[0, 0, 1]] * 20)
    save_calibration(calibrate_k(correct, [1, 2, 4], alpha=0.2, delta=0.1), tmp_path / "select" / "mine.json")
    sel = create_selector("rule", calibration="mine", search_dirs=[tmp_path])
    assert sel.k == 4
    out = sel.select(ev([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]))
    assert len(out.kept) == 4 and out.rule == "rule-ltt" and out.params["certified"]
    assert "Learn-then-Test k=4" in out.reason
    stricter = create_selector("ltt", calibration="mine", search_dirs=[tmp_path], alpha=0.001)
    assert not stricter.cal["certified"] and "no k certified" in stricter.select(ev([1, 0.5])).reason
    with pytest.raises(ConfigError, match="no calibration named 'nope'"):
        create_selector("rule", calibration="nope", search_dirs=[tmp_path])
    with pytest.raises(ConfigError, match="needs params.calibration"):
        create_selector("rule")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rule": "other"}))
    with pytest.raises(ConfigError, match="not a Learn-then-Test"):
        create_selector("rule", calibration=str(bad))
