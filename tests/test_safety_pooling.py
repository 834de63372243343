"""ragmed-answerer's closed yes/no answers pool the classifier with the image-matched evidence (issue 12, rare
findings): the pooling rule, its fitted parameters, and answers on a real chest X-ray with real IU report text as the
retrieved evidence (the shipped weights; skipped without them or without the shared data)."""
from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import data_path


def test_pool_yes_is_log_odds_pooling():
    from ragmed.generate.answerer.backend import pool_yes

    assert pool_yes(0.3, 0.0, 0.0, 1.5, 0.5) == pytest.approx(0.3)        # no votes: the classifier alone
    assert pool_yes(0.3, 2.0, 0.0, 0.0, 0.5) == pytest.approx(0.3)        # beta 0: the classifier alone
    up, down = pool_yes(0.3, 2.0, 0.0, 1.0, 0.5), pool_yes(0.3, 0.0, 2.0, 1.0, 0.5)
    assert up > 0.5 > 0.3 > down                                          # log((2 + .5) / .5) = 1.61 > logit .3 = -.85
    assert pool_yes(0.5, 1.0, 0.0, 1.0, 0.5) == pytest.approx(1 - pool_yes(0.5, 0.0, 1.0, 1.0, 0.5))
    assert pool_yes(0.3, 4.0, 0.0, 1.0, 0.5) > up                         # more asserting weight, higher P(yes)


def test_shipped_pooling_parameters_are_fitted_and_documented():
    from ragmed.generate.answerer.backend import POOLING_FILE, pooling_params

    if not POOLING_FILE.exists():
        pytest.skip("no evidence_pooling.json (eval/fit_evidence_pooling.py --write)")
    d = json.loads(POOLING_FILE.read_text())
    assert "dev slice" in d["fitted_on"] and "evaluation" not in d["fitted_on"]
    p = pooling_params()
    assert p["beta"] >= 0 and p["alpha"] > 0 and 0 <= p["min_closed_confidence"] < 1


def _reports(pred) -> list[str]:
    with open(data_path("reports", "iu-xray", "indiana_reports.csv"), newline="", encoding="utf-8") as f:
        return [" ".join(x for x in (r["findings"], r["impression"]) if x and x.strip())
                for r in csv.DictReader(f) if pred(r)]


def test_pooled_answer_follows_the_image_matched_evidence_and_cites_only_agreeing_cases():
    from ragmed.generate.answerer import AnswererGenerator
    from ragmed.generate.answerer.backend import shipped_path
    from ragmed.generate.citations import evidence_says
    from ragmed.io import load_image
    from ragmed.types import Evidence

    if not (shipped_path() / "model.safetensors").exists():
        pytest.skip("no shipped ragmed-answerer weights")
    q = "Is there a pleural effusion?"
    vqa = json.loads(data_path("vqa-rad", "train.json").read_text())
    img = load_image(data_path("vqa-rad", "images") / sorted(
        {r["image_name"] for r in vqa if r["image_organ"].strip().upper() == "CHEST"})[0])
    asserting = [t for t in _reports(lambda r: (r["MeSH"] or "").startswith("Pleural Effusion"))
                 if evidence_says(q, t) == "yes"][:5]
    denying = [t for t in _reports(lambda r: r["MeSH"] == "normal") if evidence_says(q, t) == "no"][:5]
    assert len(asserting) == 5 and len(denying) == 5

    def ev(texts, sim=0.9):
        return [Evidence(case_id=f"c{i}", score=1.0 - i / 10, ref=f"[{i + 1}]", text=t,
                         channels={"image-image": sim - i / 100}) for i, t in enumerate(texts)]

    gen = AnswererGenerator(fallback="vote", evidence_beta=4.0, evidence_alpha=0.5, min_closed_confidence=0.0)
    alone = AnswererGenerator(fallback="vote", evidence_beta=0.0, min_closed_confidence=0.0)
    p_clf = alone.predict(q, img, "closed")
    for texts, want in ((asserting, "yes"), (denying, "no")):
        g = gen.generate(q, ev(texts), [], image=img, task="closed")
        said = g.text.split()[0].strip(".").lower()
        assert said == want, (g.text, p_clf)
        assert any(f.startswith("evidence-pooled:") for f in g.flags)
        assert g.citations  # the cases that agree are cited …
        for e in ev(texts):
            if e.ref in g.citations:  # … and never one that says the opposite
                assert evidence_says(q, e.text) == said
    # no case speaks to the finding (reports that never mention it): the classifier's own answer, unpooled
    silent = [t for t in _reports(lambda r: r["MeSH"] == "normal") if "effusion" not in t.lower()][:5]
    g = gen.generate(q, ev(silent), [], image=img, task="closed")
    assert g.text.split()[0].strip(".").lower() == p_clf[0]
    assert not any(f.startswith("evidence-pooled:") for f in g.flags)
    # cases found only through their text (no image-channel score) do not vote, so they cannot move the answer
    text_only = [Evidence(case_id=f"t{i}", score=0.5, ref=f"[{i + 1}]", text=t, channels={"bm25": 9.0})
                 for i, t in enumerate(asserting)] + ev(silent[:1])
    g = gen.generate(q, text_only, [], image=img, task="closed")
    assert g.text.split()[0].strip(".").lower() == p_clf[0]


def test_image_outside_the_answerers_training_domain_is_answered_from_the_evidence(tmp_path):
    """A 28-pixel PneumoniaMNIST chest X-ray lies further from every training image of ragmed-answerer than any
    training image from its nearest neighbour: its closed answer follows the image-matched evidence (the vote),
    and is "insufficient evidence" when no case speaks to the finding; a VQA-RAD image stays with the classifier."""
    import numpy as np

    from ragmed.generate.answerer import AnswererGenerator
    from ragmed.generate.answerer.backend import shipped_path
    from ragmed.generate.answerer.image_domain import DOMAIN_FILE, load_domain
    from ragmed.generate.citations import evidence_says
    from ragmed.io import load_image
    from ragmed.types import Evidence

    if not (shipped_path() / "model.safetensors").exists() or not DOMAIN_FILE.exists():
        pytest.skip("no shipped ragmed-answerer weights / image-domain reference")
    gen = AnswererGenerator(fallback="vote", min_closed_confidence=0.0)
    dom = load_domain(gen.model)
    assert dom is not None, "image_domain.safetensors does not describe the shipped tower (rerun --image-domain)"
    assert 0.2 < dom.max_distance < 0.8 and len(dom.embeddings) >= 100
    vqa = json.loads(data_path("vqa-rad", "train.json").read_text())
    chest = load_image(data_path("vqa-rad", "images") / sorted(
        {r["image_name"] for r in vqa if r["image_organ"].strip().upper() == "CHEST"})[0])
    assert gen.outside_training(chest) is None
    from PIL import Image

    with np.load(data_path("images", "pneumoniamnist.npz")) as z:
        x = z["val_images"][:10]
    far = []
    for i, a in enumerate(x):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
        img = load_image(tmp_path / f"{i}.png")
        if gen.outside_training(img) is not None:
            far.append(img)
    assert len(far) >= 5, "most 28-pixel MedMNIST images lie outside the answerer's training images"
    q = "Is there a pleural effusion?"
    asserting = [t for t in _reports(lambda r: (r["MeSH"] or "").startswith("Pleural Effusion"))
                 if evidence_says(q, t) == "yes"][:3]
    denying = [t for t in _reports(lambda r: r["MeSH"] == "normal") if evidence_says(q, t) == "no"][:3]
    silent = [t for t in _reports(lambda r: r["MeSH"] == "normal") if "effusion" not in t.lower()][:3]

    def ev(texts):
        return [Evidence(case_id=f"c{i}", score=1.0 - i / 10, ref=f"[{i + 1}]", text=t,
                         channels={"image-image": 0.9 - i / 100}) for i, t in enumerate(texts)]

    for texts, want in ((asserting + silent[:1], "yes"), (denying + silent[:1], "no")):
        g = gen.generate(q, ev(texts), [], image=far[0], task="closed")
        assert g.text.split()[0].strip(".").lower() == want, g.text
        assert "answerer-fallback:image-outside-training" in g.flags
        assert any(f.startswith("image-distance:") for f in g.flags)
        for e in ev(texts):
            if e.ref in g.citations:
                assert evidence_says(q, e.text) == want
    g = gen.generate(q, ev(silent), [], image=far[0], task="closed")
    assert g.insufficient and "insufficient-evidence" in g.flags
    # switched off: the classifier answers as before
    off = AnswererGenerator(fallback="vote", min_closed_confidence=0.0, image_domain=False)
    g = off.generate(q, ev(asserting), [], image=far[0], task="closed")
    assert "answerer-fallback:image-outside-training" not in g.flags
    assert any(f.startswith("answer-confidence:") for f in g.flags)
