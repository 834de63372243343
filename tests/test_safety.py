"""Answers safe to show a clinician (issue 12): each example of the issue, on a small real index built from the
shared data (VQA-RAD chest X-rays paired with real Indiana University report text), with the vote generator."""
from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest

from tests.conftest import data_path

QUESTION_PTX = "Is there a pneumothorax?"


def _iu_reports() -> list[dict]:
    with open(data_path("reports", "iu-xray", "indiana_reports.csv"), newline="", encoding="utf-8") as f:
        out = []
        for r in csv.DictReader(f):
            text = " ".join(x for x in (r["findings"], r["impression"]) if x and x.strip())
            if len(text) > 20:
                out.append({"text": text, "mesh": r["MeSH"] or ""})
    return out


@pytest.fixture(scope="module")
def chest(tmp_path_factory, text_encoder):
    """20 VQA-RAD chest X-rays in the index, each with a real IU report: 17 indexed "normal" (which deny
    pneumothorax, effusion …), one asserting a pneumothorax, two asserting a pleural effusion; 3 more chest X-rays
    held out as queries."""
    from ragmed.config import load_pipeline
    from ragmed.corpus import read_corpus
    from ragmed.pipeline.build import build_from_config

    vqa = json.loads(data_path("vqa-rad", "train.json").read_text())
    images = sorted({r["image_name"] for r in vqa if r["image_organ"].strip().upper() == "CHEST"})
    random.Random(0).shuffle(images)
    reps = _iu_reports()
    normal = [r["text"] for r in reps if r["mesh"] == "normal" and "pneumothorax" in r["text"].lower()]
    ptx = [r["text"] for r in reps if "Pneumothorax" in r["mesh"] and "no pneumothorax" not in r["text"].lower()]
    eff = [r["text"] for r in reps if r["mesh"].startswith("Pleural Effusion") and "no pleural" not in r["text"].lower()]
    texts = normal[:17] + ptx[:1] + eff[:2]
    random.Random(1).shuffle(texts)
    tmp = tmp_path_factory.mktemp("safety")
    img_dir = data_path("vqa-rad", "images")
    with open(tmp / "corpus.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "image", "report"])
        w.writeheader()
        for name, text in zip(images[:20], texts):
            w.writerow({"id": name.rsplit(".", 1)[0], "image": str(img_dir / name), "report": text})
    cfg = load_pipeline("default")
    cfg.generator.name, cfg.generator.params = "vote", {}
    cfg.knowledge.path = None
    build_from_config(read_corpus(tmp / "corpus.csv"), tmp / "index", cfg, progress=False, text_encoder=text_encoder)
    from ragmed.pipeline import Pipeline

    return {"pipe": Pipeline(cfg, index=tmp / "index"), "indexed": [img_dir / n for n in images[:20]],
            "queries": [img_dir / n for n in images[20:23]], "texts": texts, "tmp": tmp}


# --- 1. closed answers follow the evidence ---------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("Pleural effusion not recognizable.", "absent"),               # the miscounted vote
    ("Head CT: no acute abnormality.", "absent"),                   # negation scoped to the finding, not to "CT"
    ("No acute intracranial abnormality.", "absent"),
    ("Possible small left pleural effusion.", "uncertain"),
    ("Small right pleural effusion. No pneumothorax.", "present"),
    ("Normal heart size.", None),
])
def test_negation_is_scoped_to_the_finding(text, expected):
    from ragmed.generate.text import finding_terms
    from ragmed.text.negation import finding_status

    q = ("Is there an acute abnormality in this head CT?" if "abnormality" in text else "Is there a pleural effusion?")
    assert finding_status(text, finding_terms(q)) == expected


def test_rare_finding_is_not_answered_yes_by_the_few_reports_that_mention_it(chest):
    """The issue: "Is there a pneumothorax?" answered "Yes" for 20 of 20 held-out images. Voters are the image-matched
    cases; the answer agrees with what they say and cites only those that agree."""
    from ragmed.generate.text import report_asserts

    p = chest["pipe"]
    for q in (QUESTION_PTX, "Is there a pleural effusion?"):
        for img in chest["queries"]:
            a = p.ask(img, q)
            # chosen by the image, not the question
            assert all(set(e.channels) <= {"image-image", "image-report"} for e in a.evidence)
            said = [report_asserts(q, e.text) for e in a.evidence]
            if a.insufficient_evidence:
                continue
            ans = a.text.split()[0].strip(".").lower()
            assert said.count(ans) > said.count("no" if ans == "yes" else "yes")
            cited = {e.ref: s for e, s in zip(a.evidence, said)}
            assert a.citations and all(cited[r] == ans for r in a.citations)


# --- 2. no answer claims support from evidence that says the opposite -------------------------------------------------
def test_acute_abnormality_answer_never_cites_reports_that_deny_it(chest):
    """The issue: "Is there an acute abnormality in this head CT?" → "Yes [1]–[5]" while all five read "no acute
    abnormality". Here: chest X-rays whose real reports deny an acute abnormality."""
    p = chest["pipe"]
    q = "Is there an acute abnormality in this chest x-ray?"
    a = p.ask(chest["queries"][0], q)
    deny = [e.ref for e in a.evidence if "no acute" in e.text.lower()]
    assert deny, "the index's normal reports deny an acute abnormality"
    assert not a.text.lower().startswith("yes")
    if not a.insufficient_evidence:
        assert a.text.lower().startswith("no") and set(a.citations) <= set(deny)


def test_a_model_answer_citing_a_disagreeing_case_loses_that_citation(chest):
    from ragmed.generate.citations import ground

    p = chest["pipe"]
    r = p.retrieve(chest["queries"][1], QUESTION_PTX)
    ev = r.candidates[:5]
    for i, e in enumerate(ev, start=1):
        e.ref = f"[{i}]"
    denying = [e.ref for e in ev if "no pneumothorax" in e.text.lower()]
    assert denying
    text, cites, flags = ground(f"Yes {''.join(denying)}.", QUESTION_PTX, ev, [], task="closed")
    assert not set(cites) & set(denying) and "dropped-disagreeing-citation" in flags
    assert "departs-from-evidence" in flags and "departs from the retrieved evidence" in text


# --- 3. knowledge is context, not an answer ---------------------------------------------------------------------------
def test_knowledge_concept_is_not_offered_as_the_diagnosis(chest):
    """The issue: "Hemorrhagic fever-renal syndrome (ORPHA:340) [K1]" where [K1] is Hypertension; and invented names
    ("Q-MALLOYER-BARRELL-BURNS-BUR [5]", "Pneumocystis ALPEMBERTUS") passed as citations-attached."""
    from ragmed.generate.citations import ground
    from ragmed.types import KnowledgeEvidence

    p = chest["pipe"]
    r = p.retrieve(chest["queries"][0], "What is the most likely diagnosis?")
    ev = r.candidates[:5]
    for i, e in enumerate(ev, start=1):
        e.ref = f"[{i}]"
    kg = [KnowledgeEvidence("DOID:10763", "hypertension", "DOID", ref="[K1]",
                            text="An artery disease characterized by chronic elevated blood pressure.")]
    text, cites, flags = ground("Hemorrhagic fever-renal syndrome (ORPHA:340) [K1].", "What is the most likely diagnosis?",
                                ev, kg, task="open")
    assert "Hemorrhagic" not in text and "withheld-knowledge-only" in flags and "insufficient-evidence" in flags
    _, _, flags = ground("Q-MALLOYER-BARRELL-BURNS-BUR [5].", "What is the most likely diagnosis?", ev, kg, task="open")
    assert any(f.startswith("unsupported-terms:") and "malloyer" in f for f in flags)
    _, _, flags = ground("Yes, Pneumocystis ALPEMBERTUS (PAM) [1].", "Is there pneumonia?", ev, kg, task="closed")
    assert any(f.startswith("unsupported-terms:") and "alpembertus" in f for f in flags)
    assert "citations-attached" not in flags


def test_extractive_answer_adds_knowledge_only_as_background_named_in_cases(chest):
    from ragmed.generate import create_generator
    from ragmed.types import KnowledgeEvidence

    p = chest["pipe"]
    r = p.retrieve(chest["queries"][0], "What do the lungs show?")
    ev = r.candidates[:5]
    for i, e in enumerate(ev, start=1):
        e.ref = f"[{i}]"
    kg = [KnowledgeEvidence("ORPHA:340", "hemorrhagic fever-renal syndrome", "ORPHA", ref="[K1]",
                            text="A viral disease. It causes fever.")]
    g = create_generator("extractive").generate("What do the lungs show?", ev, kg, task="open")
    assert "hemorrhagic" not in g.text.lower() and "[K1]" not in g.citations


# --- 4. abstention that works -----------------------------------------------------------------------------------------
def _png(path, arr):
    from PIL import Image

    Image.fromarray(arr).save(path)
    return path


def test_default_pipeline_refuses_what_is_not_a_medical_image(chest, tmp_path):
    """The issue: "Yes [1][2]" about a 1×1 PNG and "Yes [1][4][5]" about a landscape photograph."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (the eval extra) ships the photographs")
    from ragmed.errors import DomainError

    p = chest["pipe"]
    bad = {"1x1": _png(tmp_path / "one.png", np.array([[200]], np.uint8)),
           "8x8": _png(tmp_path / "eight.png", np.random.default_rng(0).integers(0, 255, (8, 8), dtype=np.uint8)),
           "blank": _png(tmp_path / "blank.png", np.zeros((256, 256), np.uint8)),
           "noise": _png(tmp_path / "noise.png", np.random.default_rng(1).integers(0, 255, (256, 256), dtype=np.uint8)),
           "astronaut": _png(tmp_path / "astro.png", skimage_data.astronaut()),
           "cat": _png(tmp_path / "cat.png", skimage_data.chelsea()),
           "rocket": _png(tmp_path / "rocket.png", skimage_data.rocket()),
           "grass": _png(tmp_path / "grass.png", skimage_data.grass())}
    for name, f in bad.items():
        with pytest.raises(DomainError):
            p.route(f)
        with pytest.raises(DomainError):
            p.ask(f, QUESTION_PTX)


def test_grey_photographs_are_refused_a_sky_band_and_a_face(tmp_path):
    """scikit-image's grey ``camera`` photograph (a man under a bright sky) and a grey portrait (matplotlib's Grace
    Hopper) are refused by the grey-photograph rules, whose thresholds were set on medical images only; a grey
    radiograph is measured well inside both."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (the eval extra) ships the photographs")
    cbook = pytest.importorskip("matplotlib.cbook", reason="matplotlib (the eval extra) ships the portrait")
    from PIL import Image

    from ragmed.domains.ood import (MAX_TOP_BRIGHT_SMOOTH, MIN_FACE_NEIGHBOURS, check_image, face_neighbours,
                                    top_bright_smooth)
    from ragmed.errors import DomainError
    from ragmed.io import load_image

    cam = load_image(_png(tmp_path / "camera.png", skimage_data.camera()))
    assert top_bright_smooth(cam) > MAX_TOP_BRIGHT_SMOOTH
    with pytest.raises(DomainError, match="bright, smooth band"):
        check_image(cam)
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        grey = np.asarray(Image.open(f).convert("L"))
    hopper = load_image(_png(tmp_path / "hopper.png", grey))
    assert not hopper.is_color and face_neighbours(hopper) >= MIN_FACE_NEIGHBOURS
    with pytest.raises(DomainError, match="human face"):
        check_image(hopper)
    xray = load_image(data_path("dicom", "J2KI", "RG1_J2KI"))
    assert top_bright_smooth(xray) <= MAX_TOP_BRIGHT_SMOOTH and face_neighbours(xray) < MIN_FACE_NEIGHBOURS
    check_image(xray)


def test_grey_photograph_thresholds_are_the_medical_calibrations():
    """The shipped thresholds are the ones eval/safety_ood.py --calibrate derived from grey medical images alone."""
    from pathlib import Path

    from ragmed.domains.ood import MAX_TOP_BRIGHT_SMOOTH, MIN_FACE_NEIGHBOURS

    cal = json.loads((Path(__file__).resolve().parent.parent / "eval" / "results" /
                      "safety_ood_calibration.json").read_text())
    assert cal["n_grey_medical"] >= 1000
    assert MAX_TOP_BRIGHT_SMOOTH == cal["MAX_TOP_BRIGHT_SMOOTH"] >= cal["max_top_bright_smooth"]
    assert MIN_FACE_NEIGHBOURS == cal["MIN_FACE_NEIGHBOURS"] == cal["max_face_neighbours"] + 1


def test_medical_photographs_and_medmnist_stay_accepted():
    from ragmed.domains.ood import check_image
    from ragmed.io import load_image

    for f in (data_path("dicom", "RLE", "VL1_RLE"), data_path("dicom", "J2KI", "VL4_J2KI"),
              sorted(data_path("images", "ham10000-subset").rglob("*.jpg"))[0], data_path("dicom", "J2KI", "RG1_J2KI")):
        check_image(load_image(f))


def test_pneumoniamnist_28_pixels_accepted(tmp_path):
    from ragmed.domains.ood import check_image
    from ragmed.io import load_image

    with np.load(data_path("images", "pneumoniamnist.npz")) as z:
        x = z["test_images"][:20]
    for i, a in enumerate(x):
        check_image(load_image(_png(tmp_path / f"{i}.png", a)))


def test_below_the_calibrated_evidence_level_the_answer_is_insufficient(chest):
    from ragmed.generate.vote import abstain_below, evidence_level
    from ragmed.types import Generation

    p = chest["pipe"]
    r = p.retrieve(chest["queries"][2], None)
    ev = r.candidates[:5]
    for i, e in enumerate(ev, start=1):
        e.ref = f"[{i}]"
    ans, level = evidence_level(QUESTION_PTX, ev)
    assert ans in ("no", None)
    g = Generation(text="Yes [1].", citations=["[1]"], model="m")
    out = abstain_below(g, QUESTION_PTX, ev, task="closed", min_level=0.05)
    assert out.insufficient and "withheld:yes" in out.flags and out.citations == []
    if ans is not None:
        keep = abstain_below(Generation(text="No [1].", citations=["[1]"], model="m"), QUESTION_PTX, ev,
                             task="closed", min_level=level - 1e-6)
        assert not keep.insufficient


# --- 5. consistency ---------------------------------------------------------------------------------------------------
def test_own_case_is_kept_first_and_excluded_by_hash(chest):
    from ragmed.io import load_image

    p = chest["pipe"]
    img = load_image(chest["indexed"][3])
    own = chest["indexed"][3].stem
    for q in ("What do the lungs show?", QUESTION_PTX):
        a = p.ask(img, q)
        assert a.evidence[0].case_id == own
        a = p.ask(img, q, exclude_hashes={img.content_hash})
        assert all(e.case_id != own for e in a.evidence)


def test_question_validation_is_one_rule_for_cli_and_api(chest):
    from click.testing import CliRunner

    from ragmed.cli import main
    from ragmed.text.questions import QuestionError, validate_question

    p = chest["pipe"]
    img = chest["queries"][0]
    for q, code in (("", "empty"), ("   ", "empty"), ("x" * 10_000, "too-long")):
        with pytest.raises(QuestionError) as api:
            p.ask(img, q)
        assert api.value.code == code
        res = CliRunner().invoke(main, ["ask", str(img), q, "--index", str(chest["tmp"] / "index")])
        assert res.exit_code != 0 and str(api.value) in res.output
        assert str(api.value) == str(pytest.raises(QuestionError, validate_question, q).value)
    a = p.ask(img, "", task="report")  # report generation only when asked explicitly
    assert a.question == "" and a.evidence
    assert validate_question("  Is there a mass?\x00 ") == "Is there a mass?"
