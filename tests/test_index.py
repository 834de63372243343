"""Index directory: build, search, add, resume, atomic swap under SIGKILL, skipped rows, encoder mismatch, no PHI."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ragmed.config import PipelineConfig
from ragmed.corpus import read_corpus
from ragmed.errors import EncoderMismatchError, IndexStoreError
from ragmed.index import build_index, open_index
from tests.corpus_utils import REPORTS, png_corpus, write_dicom, write_manifest, write_png
from tests.fakes import FakeHashTextEncoder, FakeSlowImageEncoder

REPO = Path(__file__).resolve().parent.parent


def _cfg(**index):
    return PipelineConfig.from_dict({"encoders": {"text": {"name": "minilm"}, "image": {"name": "classic"}},
                                     "index": index})


def _digest_dir(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_build_and_search_real_encoders(tmp_path, text_encoder):
    manifest = png_corpus(tmp_path / "c", 12)
    corpus = read_corpus(manifest)
    rep = build_index(corpus, tmp_path / "idx", _cfg(batch_size=5), text_encoder=text_encoder, progress=False)
    assert (rep.n_cases, rep.n_images, rep.skipped) == (12, 12, [])
    store = open_index(tmp_path / "idx")
    assert store.encoders["text"] == {"id": "minilm", "dim": 384, "space": "all-MiniLM-L6-v2"}
    q = text_encoder.encode_texts(["pneumothorax at the left apex"])
    hits = store.search("text", q, 3)[0]
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
    assert store.cases([hits[0].case_id])[hits[0].case_id].text == REPORTS[3]
    # image → image: the query image itself is its own nearest neighbour
    from ragmed.encoders import create_encoder
    from ragmed.io import load_image

    enc = create_encoder("classic")
    iv = enc.encode_images([load_image(tmp_path / "c" / "img5.png")])
    top = store.search("image", iv, 1)[0][0]
    assert top.case_id == "case5" and top.score == pytest.approx(1.0, abs=1e-4)
    cal = store.manifest["calibration"]
    assert 0 < cal["image-image"]["floor"] <= cal["image-image"]["median"] <= 1.0001


def test_factories_and_bad_factory(tmp_path):
    from ragmed.index.faiss_utils import build_faiss, resolve_factory

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, 32))
    x = centers[rng.integers(0, 20, 3000)] + 0.1 * rng.standard_normal((3000, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    ids = np.arange(3000) + 1000
    exact = build_faiss(x, ids, "Flat")
    _, gt = exact.search(x[:50], 10)
    assert (gt[:, 0] == ids[:50]).all()
    for factory in ("HNSW16,Flat", "IVF16,Flat"):
        idx = build_faiss(x, ids, factory)
        from ragmed.index.faiss_utils import set_search_params

        set_search_params(idx, ef_search=64, nprobe=8)
        _, got = idx.search(x[:50], 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, gt)])
        assert recall > 0.8, factory
    assert resolve_factory("auto", 10) == "Flat" and resolve_factory("auto", 10**6) == "HNSW32,Flat"
    with pytest.raises(IndexStoreError, match="invalid FAISS factory"):
        build_faiss(x, ids, "NotAFactory")
    with pytest.raises(IndexStoreError, match="needs at least"):
        build_faiss(x[:10], ids[:10], "IVF64,Flat")


def test_skipped_rows_truncated_textfile_missing(tmp_path):
    """A truncated DICOM, a text file named .dcm and a missing image: the build completes and reports all three."""
    from pydicom.data import get_testdata_file

    root = tmp_path / "c"
    root.mkdir()
    write_png(root / "ok1.png", 1)
    write_dicom(root / "ok2.dcm", seed=2)
    truncated = Path(get_testdata_file("MR_truncated.dcm", download=False))
    (root / "truncated.dcm").write_bytes(truncated.read_bytes())
    (root / "notes.dcm").write_text("this is a text file, not a DICOM image\n")
    manifest = write_manifest(root / "m.csv", [
        {"id": "good1", "image": "ok1.png", "report": REPORTS[0]},
        {"id": "trunc", "image": "truncated.dcm", "report": REPORTS[1]},
        {"id": "good2", "image": "ok2.dcm", "report": REPORTS[2]},
        {"id": "text", "image": "notes.dcm", "report": REPORTS[3]},
        {"id": "missing", "image": "nowhere.png", "report": REPORTS[0]},
    ])
    corpus = read_corpus(manifest)
    rep = build_index(corpus, tmp_path / "idx", _cfg(), text_encoder=FakeHashTextEncoder(), progress=False)
    assert rep.n_cases == 2
    reasons = {s["case_id"]: s["reason"] for s in rep.skipped}
    assert set(reasons) == {"trunc", "text", "missing"}
    assert "truncated.dcm" in reasons["trunc"]
    assert "notes.dcm" in reasons["text"]
    assert "not found" in reasons["missing"]
    assert {s["case_id"] for s in open_index(tmp_path / "idx").skipped()} == {"trunc", "text", "missing"}


def test_add_and_duplicate_ids(tmp_path):
    te = FakeHashTextEncoder()
    a = read_corpus(png_corpus(tmp_path / "c", 6, start=0))
    b = read_corpus(png_corpus(tmp_path / "c", 6, start=4))  # overlaps case4, case5
    build_index(a, tmp_path / "idx", _cfg(), text_encoder=te, progress=False)
    rep = build_index(b, tmp_path / "idx", _cfg(), text_encoder=te, add=True, progress=False)
    assert rep.added == 4 and rep.n_cases == 10
    assert {s["case_id"] for s in rep.skipped if "already" in s["reason"]} == {"case4", "case5"}
    store = open_index(tmp_path / "idx")
    assert store.count("cases") == 10 and store.faiss_index("all", "image").ntotal == 10


def test_encoder_mismatch_is_refused(tmp_path):
    from ragmed.encoders import create_encoder

    corpus = read_corpus(png_corpus(tmp_path / "c", 4))
    build_index(corpus, tmp_path / "idx", _cfg(), text_encoder=FakeHashTextEncoder(), progress=False)
    store = open_index(tmp_path / "idx")
    with pytest.raises(EncoderMismatchError) as e:
        store.check_encoder("image", create_encoder("classic", size=8))
    assert "classic-16px-32bins" in str(e.value) and "classic-8px-32bins" in str(e.value)
    with pytest.raises(EncoderMismatchError):
        build_index(corpus, tmp_path / "idx", _cfg(), text_encoder=FakeHashTextEncoder(dim=32), add=True,
                    progress=False)


def test_resume_after_interrupt(tmp_path):
    te, ie = FakeHashTextEncoder(), FakeSlowImageEncoder(delay=0)
    corpus = read_corpus(png_corpus(tmp_path / "c", 10))
    with pytest.raises(KeyboardInterrupt):
        build_index(corpus, tmp_path / "idx", _cfg(batch_size=3), text_encoder=te, image_encoder=ie,
                    progress=False, stop_after_batches=2)
    assert not (tmp_path / "idx" / "current").exists()
    rep = build_index(corpus, tmp_path / "idx", _cfg(batch_size=3), text_encoder=te, image_encoder=ie, progress=False)
    assert rep.resumed_from == 6 and rep.n_cases == 10 and rep.added == 4
    assert open_index(tmp_path / "idx").faiss_index("all", "image").ntotal == 10


KILL_SCRIPT = r"""
import sys
sys.path.insert(0, {repo!r})
from ragmed.config import PipelineConfig
from ragmed.corpus import read_corpus
from ragmed.index import build_index
from tests.fakes import FakeHashTextEncoder, FakeSlowImageEncoder
cfg = PipelineConfig.from_dict({{"encoders": {{"text": {{"name": "minilm"}}, "image": {{"name": "classic"}}}},
                                "index": {{"batch_size": 2}}}})
build_index(read_corpus({manifest!r}), {out!r}, cfg, text_encoder=FakeHashTextEncoder(),
            image_encoder=FakeSlowImageEncoder(delay={delay}), add=True, progress=False)
"""


def test_sigkill_mid_build_leaves_previous_index_intact_and_resume_completes(tmp_path):
    te = FakeHashTextEncoder()
    out = tmp_path / "idx"
    first = read_corpus(png_corpus(tmp_path / "c", 4, start=0))
    cfg = _cfg(batch_size=2)
    build_index(first, out, cfg, text_encoder=te, image_encoder=FakeSlowImageEncoder(delay=0), progress=False)
    live = (out / "current").resolve()
    before = _digest_dir(live)
    before_cases = sorted(r.case_id for r in open_index(out).iter_cases())
    second = png_corpus(tmp_path / "c", 30, start=100)
    script = KILL_SCRIPT.format(repo=str(REPO), manifest=str(second), out=str(out), delay=0.4)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    db = out / ".staging" / "meta.sqlite"
    deadline = time.time() + 120
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as con:
                    committed = con.execute("SELECT COUNT(*) FROM parts").fetchone()[0]
            except sqlite3.Error:
                committed = 0
            if committed >= 3:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 3 <= committed < 15
    # the previous index is untouched and loadable
    assert (out / "current").resolve() == live
    assert _digest_dir(live) == before
    store = open_index(out)
    assert sorted(r.case_id for r in store.iter_cases()) == before_cases
    assert store.faiss_index("all", "image").ntotal == 4
    # a resumed build (same inputs) completes, re-encoding only what was not committed
    rep = build_index(read_corpus(second), out, cfg, text_encoder=te, image_encoder=FakeSlowImageEncoder(delay=0),
                      add=True, progress=False)
    assert rep.resumed_from == 0 and rep.n_cases == 34
    assert rep.added < 30  # the committed batches were not redone
    assert open_index(out).faiss_index("all", "image").ntotal == 34


PHI = {"PatientName": "ZZTESTPATIENT^ALICE", "PatientID": "PID-998877", "PatientBirthDate": "19510423",
       "AccessionNumber": "ACC-55443322", "InstitutionName": "Secret General Hospital",
       "ReferringPhysicianName": "DRWHOEVER^BOB", "StudyDescription": "CT CHEST for ZZTESTPATIENT"}


def test_no_phi_in_index_or_logs(tmp_path, caplog, text_encoder):
    root = tmp_path / "c"
    root.mkdir()
    rows = []
    for i in range(4):
        write_dicom(root / f"s{i}.dcm", seed=i, phi=PHI)
        rows.append({"id": f"d{i}", "image": f"s{i}.dcm", "report": REPORTS[i]})
    (root / "broken.dcm").write_bytes((root / "s0.dcm").read_bytes()[:600])  # header with PHI, truncated
    rows.append({"id": "broken", "image": "broken.dcm", "report": REPORTS[0]})
    corpus = read_corpus(write_manifest(root / "m.csv", rows))
    caplog.set_level(logging.DEBUG)
    rep = build_index(corpus, tmp_path / "idx", _cfg(), text_encoder=text_encoder, progress=False)
    assert rep.n_cases == 4 and len(rep.skipped) == 1
    from ragmed.demo import scan_for_phi

    assert scan_for_phi(tmp_path / "idx", PHI) == []
    text = caplog.text + json.dumps(rep.to_dict())
    for v in PHI.values():
        assert v not in text
        for part in v.split("^"):
            assert part not in text


@pytest.mark.parametrize("min_images,fits", [(6, True), (100, False)])
def test_fit_image_encoder_auto_fits_only_corpora_large_enough(tmp_path, text_encoder, min_images, fits):
    cfg = PipelineConfig.from_dict({"encoders": {"text": {"name": "minilm"}, "image": {"name": "ragmed-default"}},
                                    "index": {"fit_image_encoder": "auto", "fit_auto_min_images": min_images,
                                              "fit_epochs": 1, "fit_min_steps": 3}})
    corpus = read_corpus(png_corpus(tmp_path / "c", 8))
    build_index(corpus, tmp_path / "idx", cfg, text_encoder=text_encoder, progress=False)
    rec = open_index(tmp_path / "idx").encoders["image"]
    assert rec["id"].startswith("ragmed-default-fit-") is fits
    assert ("model_dir" in rec) is fits


def test_adding_to_a_fitted_index_reuses_its_fitted_tower(tmp_path, text_encoder):
    cfg = PipelineConfig.from_dict({"encoders": {"text": {"name": "minilm"}, "image": {"name": "ragmed-default"}},
                                    "index": {"fit_image_encoder": True, "fit_epochs": 1, "fit_min_steps": 3}})
    build_index(read_corpus(png_corpus(tmp_path / "a", 6)), tmp_path / "idx", cfg, text_encoder=text_encoder,
                progress=False)
    first = open_index(tmp_path / "idx").encoders["image"]
    rep = build_index(read_corpus(png_corpus(tmp_path / "b", 4, start=6)), tmp_path / "idx", cfg,
                      text_encoder=text_encoder, add=True, progress=False)
    store = open_index(tmp_path / "idx")
    assert store.encoders["image"]["id"] == first["id"]  # not refitted, so the old vectors stay comparable
    assert (store.version_dir / "image_encoder" / "model.safetensors").exists()
    assert store.count() == 10 and rep.n_cases == 10


def test_fit_image_encoder_at_build_travels_with_the_index(tmp_path, text_encoder):
    from ragmed.pipeline import Pipeline

    cfg = PipelineConfig.from_dict({"encoders": {"text": {"name": "minilm"}, "image": {"name": "ragmed-default"}},
                                    "index": {"fit_image_encoder": True, "fit_epochs": 1,
                                              "fit_min_steps": 5}})
    corpus = read_corpus(png_corpus(tmp_path / "c", 8))
    build_index(corpus, tmp_path / "idx", cfg, text_encoder=text_encoder, progress=False)
    store = open_index(tmp_path / "idx")
    rec = store.encoders["image"]
    assert rec["id"].startswith("ragmed-default-fit-") and rec["model_dir"] == "image_encoder"
    assert (store.version_dir / "image_encoder").is_dir()
    assert not (tmp_path / "idx" / ".fit").exists()  # the fit's work folder is not left beside the index
    p = Pipeline.from_components(cfg, tmp_path / "idx", text_encoder=text_encoder)
    assert p.image_encoder.id == rec["id"]  # the fitted tower is loaded, so the encoder check passes
    a = p.ask(tmp_path / "c" / "img3.png", "Is there a pneumothorax?")
    assert a.evidence and a.evidence[0].case_id == "case3"
