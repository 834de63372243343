"""The learned map from linked concepts to a corpus's index terms (ragmed.knowledge.indexer), on the bundled graph."""
from __future__ import annotations

import pytest

from ragmed.knowledge import default_graph_path, load_graph
from ragmed.knowledge.indexer import (IndexTermMapper, choose_threshold, cross_val_proba, mention_features,
                                      precision_recall_curve, wilson_lower)

pytestmark = pytest.mark.skipif(not default_graph_path().exists(), reason="bundled knowledge graph not built")


@pytest.fixture(scope="module")
def kg():
    return load_graph()


def _feats(kg, text, kind="full"):
    return mention_features(text, kg.link(text), kind)


def test_features_leave_out_negated_and_mark_hedged(kg):
    text = "No pleural effusion. Mild cardiomegaly. Opacities may represent pneumonia."
    ms = {m.name.lower(): m for m in kg.link(text)}
    f = _feats(kg, text)
    cm = next(m for m in kg.link(text) if "cardiomegaly" in m.text.lower())
    eff = next(m for m in kg.link(text) if "effusion" in m.text.lower())
    pn = next(m for m in kg.link(text) if "pneumonia" in m.text.lower())
    assert eff.negated and f"a:{eff.id}" not in f and f"u:{eff.id}" not in f
    assert f"a:{cm.id}" in f and "wa:cardiomegaly" in f
    assert pn.uncertain and f"u:{pn.id}" in f and f"a:{pn.id}" not in f
    # the ids-only feature set has no status, words or pairs
    plain = _feats(kg, text, "concepts")
    assert f"a:{pn.id}" in plain and not any(k.startswith(("w", "p:")) for k in plain)
    assert ms  # linked something at all
    with pytest.raises(ValueError):
        mention_features(text, [], "bogus")


def _corpus():
    # a tiny labelled collection: the index term "lung" is coded for hypoinflation, "cardiomegaly" for an enlarged
    # heart, nothing when the finding is denied
    pos_l = ["Low lung volumes.", "Hypoinflation of the lungs.", "The lungs are hypoinflated. Heart normal."]
    pos_c = ["Cardiomegaly.", "Mild cardiomegaly is present.", "Stable cardiomegaly. Lungs clear."]
    neg = ["No cardiomegaly.", "The lungs are clear.", "No pneumothorax or pleural effusion."]
    texts, labels = [], []
    for k in range(4):
        for t in pos_l:
            texts.append(t)
            labels.append({"lung"})
        for t in pos_c:
            texts.append(t)
            labels.append({"cardiomegaly"})
        for t in neg:
            texts.append(t)
            labels.append(set())
    return texts, labels


def test_mapper_learns_terms_and_respects_negation(kg):
    texts, labels = _corpus()
    feats = [_feats(kg, t) for t in texts]
    m = IndexTermMapper(C=5.0, min_support=3).fit(feats, labels)
    assert m.terms == ["cardiomegaly", "lung"]
    got = m.predict([_feats(kg, t) for t in ("Moderate cardiomegaly.", "No cardiomegaly.", "Hypoinflation.")], 0.5)
    assert got == [{"cardiomegaly"}, set(), {"lung"}]
    with pytest.raises(ValueError):
        IndexTermMapper().fit(feats, labels[:-1])
    with pytest.raises(RuntimeError):
        IndexTermMapper().predict_proba(feats)


def test_cross_validation_is_out_of_fold_and_threshold_rule(kg):
    texts, labels = _corpus()
    feats = [_feats(kg, t) for t in texts]
    probs = cross_val_proba(feats, labels, folds=4, C=5.0, min_support=3)
    assert len(probs) == len(texts) and all(set(d) <= {"cardiomegaly", "lung"} for d in probs)
    curve = precision_recall_curve(probs, labels, thresholds=(0.2, 0.5, 0.8))
    assert [c["threshold"] for c in curve] == [0.2, 0.5, 0.8]
    assert curve[1]["precision"] >= 0.9 and curve[1]["recall"] >= 0.9
    # the rule: best F1 among points whose precision's lower bound clears the bar; else the most precise point
    pts = [{"threshold": 0.1, "predicted": 100, "correct": 70, "precision": 0.7, "recall": 0.9, "f1": 0.79},
           {"threshold": 0.5, "predicted": 100, "correct": 85, "precision": 0.85, "recall": 0.6, "f1": 0.70},
           {"threshold": 0.9, "predicted": 20, "correct": 19, "precision": 0.95, "recall": 0.1, "f1": 0.18}]
    assert choose_threshold(pts)["threshold"] == 0.5
    assert choose_threshold(pts, min_precision=0.99)["threshold"] == 0.9
    assert wilson_lower(85, 100) == pytest.approx(0.7821, abs=1e-3) and wilson_lower(0, 0) == 0.0
