"""Corpus manifests (CSV / JSONL), VQA importers and report sectioning."""
from __future__ import annotations

import json

import pytest

from ragmed.corpus import read_corpus, split_sections
from ragmed.corpus.vqa import read_qa
from ragmed.errors import CorpusError
from tests.conftest import data_path
from tests.corpus_utils import write_manifest, write_png


def test_csv_minimal_multi_image_extra_columns_and_text_only(tmp_path):
    write_png(tmp_path / "a.png", 1)
    write_png(tmp_path / "b.png", 2)
    m = write_manifest(tmp_path / "m.csv", [
        {"id": "c1", "image": "a.png|b.png", "report": "FINDINGS: clear lungs. IMPRESSION: normal.", "label": "normal",
         "split": "train", "patient_group": "g1"},
        {"id": "c2", "image": "", "report": "Text-only case.", "label": "x", "split": "", "patient_group": ""},
        {"id": "c3", "image": "gone.png", "report": "r", "label": "y", "split": "", "patient_group": ""},
    ])
    c = read_corpus(m)
    assert [x.id for x in c] == ["c1", "c2"]
    assert len(c.cases[0].images) == 2 and c.cases[0].images[0].endswith("a.png")
    assert c.cases[0].metadata == {"label": "normal", "patient_group": "g1"}
    assert c.cases[0].split == "train" and c.cases[1].split is None
    assert c.cases[0].sections == {"findings": "clear lungs.", "impression": "normal."}
    assert c.cases[1].images == []
    assert [(s.row, s.case_id, s.path) for s in c.skipped] == [(3, "c3", "gone.png")]
    assert "not found" in c.skipped[0].reason


def test_jsonl_with_list_images_findings_and_bad_lines(tmp_path):
    write_png(tmp_path / "a.png", 1)
    lines = [json.dumps({"id": "j1", "images": ["a.png"], "findings": "Small effusion.", "impression": "Effusion."}),
             "{not json", json.dumps(["array"]), "", json.dumps({"id": "j2", "report": "ok"})]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    c = read_corpus(tmp_path / "m.jsonl")
    assert [x.id for x in c] == ["j1", "j2"]
    assert c.cases[0].text == "FINDINGS: Small effusion. IMPRESSION: Effusion."
    assert [s.row for s in c.skipped] == [2, 3]


def test_bad_manifests(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        read_corpus(tmp_path / "nope.csv")
    (tmp_path / "bad.csv").write_text("name,path\nx,y\n")
    with pytest.raises(CorpusError, match="header must have 'id'"):
        read_corpus(tmp_path / "bad.csv")
    (tmp_path / "m.txt").write_text("id,image\n")
    with pytest.raises(CorpusError, match="pass --format"):
        read_corpus(tmp_path / "m.txt")
    (tmp_path / "latin.csv").write_bytes("id,report\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(CorpusError, match="not UTF-8"):
        read_corpus(tmp_path / "latin.csv")


def test_sections():
    s = split_sections("INDICATION: cough. COMPARISON: none. FINDINGS: The heart is normal. IMPRESSION: No acute disease.")
    assert s == {"indication": "cough.", "comparison": "none.", "findings": "The heart is normal.",
                 "impression": "No acute disease."}
    assert split_sections("Heart normal.") == {"findings": "Heart normal."}
    assert split_sections("") == {}
    assert split_sections("Impression: effusion")["impression"] == "effusion"


def test_vqa_rad_importer():
    qa = data_path("vqa-rad", "train.json")
    c = read_corpus(qa, format="vqa-rad", images=data_path("vqa-rad", "images"))
    items = read_qa(qa)
    assert len(c) == len({i.image for i in items}) - len(c.skipped)
    case = c.cases[0]
    assert case.id == items[0].image.rsplit(".", 1)[0]
    assert case.metadata["image_organ"] == items[0].organ
    assert f"Q: {items[0].question} A: {items[0].answer}." in case.text
    assert {i.answer_type for i in items} <= {"closed", "open"}


def test_slake_importer_english_only(tmp_path):
    write_png(tmp_path / "1.png", 1)
    data = [
        {"img_name": "xmlab1/source.jpg", "question": "Which organ?", "answer": "Lung", "answer_type": "OPEN",
         "q_lang": "en", "content_type": "Organ", "modality": "CT", "location": "Chest", "qid": 1},
        {"img_name": "xmlab1/source.jpg", "question": "哪个器官?", "answer": "肺", "answer_type": "OPEN",
         "q_lang": "zh", "content_type": "Organ", "modality": "CT", "location": "Chest", "qid": 2},
    ]
    (tmp_path / "xmlab1").mkdir()
    write_png(tmp_path / "xmlab1" / "source.jpg", 3)
    (tmp_path / "test.json").write_text(json.dumps(data))
    c = read_corpus(tmp_path / "test.json", images=tmp_path)  # format detected from the fields
    assert c.format == "slake" and len(c) == 1
    assert c.cases[0].metadata == {"modality": "CT", "location": "Chest"}
    assert "哪个" not in c.cases[0].text
    with pytest.raises(CorpusError, match="needs --images"):
        read_corpus(tmp_path / "test.json", format="slake")


def test_column_mapping_text_only(tmp_path):
    (tmp_path / "r.csv").write_text("uid,image,findings,impression,MeSH\n1,Xray Chest PA,Clear lungs.,Normal.,normal\n"
                                    "2,Xray Chest,Small effusion.,Effusion.,Pleural Effusion/small\n")
    c = read_corpus(tmp_path / "r.csv", columns={"id": "uid", "image": ""})
    assert [x.id for x in c] == ["1", "2"] and c.cases[0].images == [] and not c.skipped
    assert c.cases[1].text == "FINDINGS: Small effusion. IMPRESSION: Effusion."
    assert c.cases[1].metadata["mesh"] == "Pleural Effusion/small"
    with pytest.raises(CorpusError, match="'nope'"):
        read_corpus(tmp_path / "r.csv", columns={"id": "nope"})
