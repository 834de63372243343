"""``ragmed serve api`` as a real process on 127.0.0.1 over a real index (MiniLM + the shipped image tower + FAISS,
extractive answerer): uploads of PNG and DICOM files, errors, the API key, the upload limit, and no identifiers or
server paths in any reply."""
from __future__ import annotations

import json

import pytest

from ragmed.config import PipelineConfig
from ragmed.corpus import read_corpus
from tests.corpus_utils import png_corpus, write_dicom, write_png

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")

KEY = {"Authorization": "Bearer s3cret-test-key-0123456789"}
PHI = {"PatientName": "Doe^Jane", "PatientID": "PID-99812", "PatientBirthDate": "19700101",
       "InstitutionName": "Mercy General"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, text_encoder):
    from ragmed.pipeline.build import build_from_config
    from ragmed.serve.process import start_server, stop_server

    d = tmp_path_factory.mktemp("api")
    cfg = PipelineConfig.from_dict({"name": "api-test",
                                    "encoders": {"text": {"name": "minilm"}, "image": {"name": "ragmed-default"}},
                                    "generator": {"name": "extractive"}})
    build_from_config(read_corpus(png_corpus(d / "corpus", 12)), d / "idx", cfg, text_encoder=text_encoder,
                      progress=False)
    proc, url = start_server("api", ["--index", str(d / "idx"), "--api-key-env", "RAGMED_TEST_API_KEY",
                                     "--max-upload-mb", "0.5"], env={"RAGMED_TEST_API_KEY": "s3cret-test-key-0123456789"}, timeout=180)
    yield url, d
    stop_server(proc)


def test_health(server):
    url, _ = server
    r = httpx.get(url + "/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["answer_schema"] == 1 and r.json()["pipeline"] == "api-test"


def test_ask_with_a_png_returns_a_cited_answer(server):
    url, d = server
    with open(d / "corpus" / "img1.png", "rb") as f:
        r = httpx.post(url + "/v1/ask", headers=KEY, data={"question": "Is there a pleural effusion?"},
                       files={"image": ("whatever-name.png", f, "image/png")}, timeout=60)
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["schema"] == 1 and a["intended_use"] and a["evidence"]
    assert a["evidence"][0]["case_id"] == "case1"  # the indexed copy of the uploaded image ranks first
    refs = {e["ref"] for e in a["evidence"]}
    assert a["citations"] and set(a["citations"]) <= refs
    assert a["image"]["source"] == "upload"
    assert "ragmed-upload-" not in r.text and "whatever-name" not in r.text


def test_ask_with_a_dicom_carrying_identifiers_leaks_none(server, tmp_path):
    url, _ = server
    dcm = write_dicom(tmp_path / "Doe_Jane.dcm", seed=3, phi=PHI, size=64, phantom=True)
    with open(dcm, "rb") as f:
        r = httpx.post(url + "/v1/ask", headers=KEY, data={"question": "What abnormality is seen?"},
                       files={"image": ("Doe_Jane.dcm", f, "application/dicom")}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["image"]["modality"] == "CT"
    for value in ("Doe", "Jane", "PID-99812", "19700101", "Mercy"):
        assert value not in r.text


def test_errors(server, tmp_path):
    url, _ = server
    r = httpx.post(url + "/v1/ask", data={"question": "q"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(url + "/v1/ask", headers=KEY, files={"image": ("a.png", b"not an image at all", "image/png")},
                   data={"question": "Is it normal?"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "UnsupportedFormatError" and err["message"].startswith("upload:")
    assert "/tmp" not in err["message"]
    r = httpx.post(url + "/v1/ask", headers=KEY, data={})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request"
    big = write_png(tmp_path / "big.png", seed=0, size=48)
    payload = big.read_bytes() + b"\0" * (600 * 1024)
    r = httpx.post(url + "/v1/ask", headers=KEY, data={"question": "q"},
                   files={"image": ("big.png", payload, "image/png")})
    assert r.status_code == 413 and r.json()["error"]["type"] == "upload_too_large"
    r = httpx.post(url + "/v1/retrieve", headers=KEY, data={})
    assert r.status_code == 400


def test_retrieve_and_question_only_ask(server):
    url, _ = server
    r = httpx.post(url + "/v1/retrieve", headers=KEY, data={"question": "pneumothorax", "k": "3"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert 1 <= len(body["candidates"]) <= 3 and "score" in json.dumps(body["candidates"][0])
    r = httpx.post(url + "/v1/ask", headers=KEY, data={"question": "Is there a left pneumothorax?"}, timeout=60)
    assert r.status_code == 200 and r.json()["image"] == {}
