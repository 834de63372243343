"""The bundled ragmed-default image encoder: shipped weights, contract, training (CLI, resume), fit_to_corpus."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import data_path


def _img(pixels, name="x"):
    from ragmed.io import MedicalImage

    return MedicalImage(pixels=np.asarray(pixels, dtype=np.float32), source=name, content_hash=name, format="png")


@pytest.fixture(scope="module")
def shipped():
    from ragmed.encoders import create_encoder

    return create_encoder("ragmed-default")


def test_shipped_weights_are_small_and_complete():
    from ragmed.encoders.default import FILES, shipped_path

    d = shipped_path()
    for f in FILES + ("README.md",):
        assert (d / f).is_file(), f
    assert (d / "model.safetensors").stat().st_size <= 30 * 2**20
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["space"] == "all-MiniLM-L6-v2" and cfg["dim"] == 384
    assert "VQA-RAD" in cfg["trained_on"] and "HAM10000" not in cfg["trained_on"]
    assert cfg["command"].startswith("python eval/train_default_encoder.py")


def test_contract(shipped, text_encoder):
    rng = np.random.default_rng(0)
    ims = [_img(rng.random((90 + 7 * i, 120))) for i in range(5)] + [_img(rng.random((64, 80, 3)))]
    a = shipped.encode_images(ims)
    assert a.shape == (6, 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, shipped.encode_images(ims))
    np.testing.assert_allclose(a, np.concatenate([shipped.encode_images([im]) for im in ims]), atol=1e-5)
    assert shipped.space == text_encoder.space and shipped.dim == text_encoder.dim
    assert shipped.id.startswith("ragmed-default@")


def test_grayscale_is_native(shipped):
    """A grayscale image and the same image as gray RGB embed (almost) identically: colour planes stay neutral."""
    g = np.random.default_rng(1).random((100, 140)).astype(np.float32)
    a, b = shipped.encode_images([_img(g), _img(np.repeat(g[..., None], 3, axis=2))])
    assert float(a @ b) > 0.999
    from ragmed.encoders.tower import letterbox_uint8

    arr = letterbox_uint8(g, 112)
    assert arr.shape == (112, 112, 3) and (arr[..., 1:] == 128).all()
    assert (arr[:6, :, 0] == 0).all()  # letterboxed: padding rows are black, nothing cropped


def test_image_to_report_search_on_real_images(shipped, text_encoder):
    """The shipped encoder puts a chest X-ray nearer 'chest X-ray' text than 'blood smear' text, and vice versa."""
    from ragmed.io import load_image

    xray = load_image(data_path("vqa-rad", "images", "synpic54610.jpg"))  # a head image in VQA-RAD
    smear = load_image(sorted(data_path("images", "bccd", "BCCD", "JPEGImages").glob("*.jpg"))[0])
    v = shipped.encode_images([xray, smear])
    t = text_encoder.encode_texts(["Radiology image of the head.", "Microscopy of a stained peripheral blood smear."])
    s = v @ t.T
    assert s[0, 0] > s[0, 1] and s[1, 1] > s[1, 0]


def test_missing_model_dir_is_clear(tmp_path):
    from ragmed.encoders import create_encoder
    from ragmed.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError) as e:
        create_encoder("ragmed-default", path=str(tmp_path / "nope"))
    assert "nope" in str(e.value) and "ragmed encoder train" in str(e.value)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="missing model.safetensors, preprocess.json"):
        create_encoder("ragmed-default", path=str(tmp_path / "half"))


# --- training -----------------------------------------------------------------------------------------------------
def _toy_corpus(d: Path, n: int = 24) -> Path:
    """Two visually distinct kinds of image with two different reports (written by the test)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = ["id,image,report"]
    yy, xx = np.mgrid[:96, :96]
    for i in range(n):
        if i % 2:
            a = ((np.sin(xx / (3 + i % 5)) > 0) * 200 + rng.integers(0, 40, (96, 96))).clip(0, 255)
            rep = "Striped pattern in the left lung, consistent with fibrosis."
        else:
            r = 20 + (i % 7) * 3
            a = (((yy - 48) ** 2 + (xx - 40 - i % 9) ** 2 < r * r) * 220 + rng.integers(0, 30, (96, 96))).clip(0, 255)
            rep = "Round bright mass in the liver."
        Image.fromarray(a.astype(np.uint8)).save(d / f"im{i}.png")
        rows.append(f"c{i},im{i}.png,{rep}")
    (d / "manifest.csv").write_text("\n".join(rows) + "\n")
    return d / "manifest.csv"


def _retrieval_accuracy(enc, text_encoder, corpus) -> float:
    from ragmed.io import load_image

    ims = [load_image(c.images[0]) for c in corpus.cases]
    reps = sorted({c.text for c in corpus.cases})
    s = enc.encode_images(ims) @ text_encoder.encode_texts(reps).T
    return float(np.mean([reps[j] == c.text for j, c in zip(s.argmax(1), corpus.cases)]))


@pytest.mark.slow
def test_cli_train_resume_and_load(tmp_path, text_encoder):
    from click.testing import CliRunner

    from ragmed.cli import main
    from ragmed.corpus import read_corpus
    from ragmed.encoders import create_encoder
    from ragmed.encoders.train import TrainConfig, build_trainset, samples_from_corpus, train_tower

    manifest = _toy_corpus(tmp_path)
    corpus = read_corpus(manifest)
    out = tmp_path / "enc"
    # interrupted run, then the same command resumes from its checkpoint
    data = build_trainset(samples_from_corpus(corpus), 112)
    cfg = TrainConfig(epochs=6, batch_size=8, lr=2e-3, checkpoint_every=2, seed=0)
    with pytest.raises(KeyboardInterrupt):
        train_tower(data, out, text_encoder, config=cfg, progress=False, stop_after_steps=4)
    assert (tmp_path / ".enc.checkpoint" / "state.json").exists() and not out.exists()
    train_tower(data, out, text_encoder, config=cfg, progress=False)
    info = json.loads((out / "config.json").read_text())
    assert info["training"]["resumed_from_step"] == 4 and info["training"]["steps"] == 18
    assert not (tmp_path / ".enc.checkpoint").exists()
    enc = create_encoder("ragmed-default", path=str(out))
    assert _retrieval_accuracy(enc, text_encoder, corpus) >= 0.9  # it learned the two kinds

    res = CliRunner().invoke(main, ["encoder", "train", "--corpus", str(manifest), "--out", str(tmp_path / "cli"),
                                    "--epochs", "2", "--batch-size", "8", "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["images"] == 24 and Path(summary["out"], "model.safetensors").exists()
    res = CliRunner().invoke(main, ["encoder", "list", "--kind", "image"])
    assert "ragmed-default\timage" in res.output and "minilm" not in res.output


@pytest.mark.slow
def test_fit_to_corpus(tmp_path, shipped, text_encoder):
    from ragmed.corpus import read_corpus
    from ragmed.encoders import create_encoder, fit_to_corpus

    corpus = read_corpus(_toy_corpus(tmp_path))
    before = _retrieval_accuracy(shipped, text_encoder, corpus)
    fitted = fit_to_corpus(shipped, corpus, text_encoder, epochs=4, min_steps=12, work_dir=tmp_path / ".fit",
                           progress=False)
    assert fitted.id != shipped.id and corpus.checksum() in fitted.id
    assert fitted.space == shipped.space and fitted.dim == 384
    assert _retrieval_accuracy(fitted, text_encoder, corpus) >= max(0.9, before)
    reloaded = create_encoder("ragmed-default", path=str(tmp_path / ".fit" / "model"))
    assert reloaded.id == fitted.id
    from ragmed.io import load_image

    im = [load_image(corpus.cases[0].images[0])]
    np.testing.assert_allclose(reloaded.encode_images(im), fitted.encode_images(im), atol=1e-6)
    again = fit_to_corpus(shipped, corpus, text_encoder, epochs=4, min_steps=12, work_dir=tmp_path / ".fit",
                          progress=False)
    assert again.id == fitted.id  # reused, not retrained


def test_fit_to_corpus_uses_images_without_reports(tmp_path, shipped, text_encoder):
    """Cases without report text still adapt the tower (image–image term); without that term they cannot."""
    from ragmed.corpus import read_corpus
    from ragmed.encoders import fit_to_corpus
    from ragmed.errors import EncoderError

    corpus = read_corpus(_toy_corpus(tmp_path))
    for c in corpus.cases[::2]:
        c.report, c.sections = "", {}
    n_textless = sum(len(c.images) for c in corpus.cases if not c.text)
    assert n_textless > 0
    fitted = fit_to_corpus(shipped, corpus, text_encoder, epochs=1, min_steps=3, work_dir=tmp_path / ".fit",
                           progress=False)
    cfg = json.loads((Path(fitted.path) / "config.json").read_text())
    assert cfg["fit_images_without_text"] == n_textless
    assert cfg["training"]["steps"] >= 3
    for c in corpus.cases:
        c.report, c.sections = "", {}
    with pytest.raises(EncoderError, match="with report text"):
        fit_to_corpus(shipped, corpus, text_encoder, ssl_weight=0, min_steps=3, work_dir=tmp_path / ".fit0",
                      progress=False)
