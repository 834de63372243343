"""Hybrid retrieval: BM25 over report text built with the index, per-domain score calibration, RRF and calibrated
score fusion with duplicates merged and each channel's contribution kept."""
from __future__ import annotations

import shutil

import pytest

from ragmed.errors import ConfigError
from ragmed.index.store import Hit
from tests.conftest import data_path
from tests.multidomain_utils import multidomain_config, pick_images, shared_md_index  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def hy_index(shared_md_index):
    return shared_md_index, multidomain_config()


def test_bm25_built_with_the_index_and_searchable(hy_index):
    from ragmed.index.store import IndexStore
    from ragmed.pipeline.hybrid import BM25Channel

    store = IndexStore(hy_index[0])
    assert (store.version_dir / "bm25" / "docs.json").exists()
    assert not list((store.version_dir / "bm25").glob("*.pkl"))
    bm = BM25Channel.load(store.version_dir)
    hits = bm.search("keratin pearls squamous", 5)
    assert hits and all(h.channel == "bm25" and h.score > 0 for h in hits)
    top = store.cases([hits[0].case_id])[hits[0].case_id]
    assert "keratin pearls" in top.text
    assert all(h.domain == "microscopy" for h in bm.search("neutrophil platelets", 5, domains=["microscopy"]))
    assert bm.search("neutrophil platelets", 5, domains=["mri"]) == []  # words only in microscopy reports
    assert bm.search("the of and", 5) == []  # stop words only


def test_calibration_file_monotone_and_bounded(hy_index):
    from ragmed.index.store import IndexStore
    from ragmed.pipeline.hybrid import Calibrator

    store = IndexStore(hy_index[0])
    cal = Calibrator.load(store.version_dir)
    assert set(cal.data["domains"]) == {"dermatology", "microscopy", "mri", "pathology"}
    assert {"image-image", "question-report", "bm25"} <= set(cal.data["domains"]["mri"])
    xs = [i / 50 for i in range(-10, 60)]
    ys = [cal("mri", "image-image", x) for x in xs]
    assert all(0 <= y <= 1 for y in ys) and ys == sorted(ys) and ys[0] == 0 and ys[-1] == 1
    assert 0 <= cal("unknown-domain", "bm25", 3.0) <= 1  # pooled over domains
    assert cal("mri", "no-such-channel", 0.3) == 0.3 and cal("mri", "no-such-channel", 7) == 1.0  # clipped raw


def test_fuse_rrf_merges_duplicates_and_keeps_channel_contributions():
    from ragmed.pipeline import fuse

    channels = {"image-image": [Hit("a", 0.9, "image-image"), Hit("b", 0.8, "image-image"),
                                Hit("a", 0.7, "image-image")],
                "bm25": [Hit("b", 7.0, "bm25"), Hit("c", 3.0, "bm25")]}
    out = fuse(channels, {"zzz"}, method="rrf", rrf_k=60, k=10)
    ids = [e.case_id for e in out]
    assert ids == ["b", "a", "c"] and len(set(ids)) == 3
    b = out[0]
    assert b.channels == {"image-image": 0.8, "bm25": 7.0} and b.ranks == {"image-image": 2, "bm25": 1}
    assert b.score == pytest.approx(1 / 62 + 1 / 61, abs=1e-6)
    assert out[1].ranks == {"image-image": 1}  # the duplicate 'a' hit did not count twice
    rest = {e.case_id: e for e in fuse(channels, {"b"}, k=10)}  # excluded cases drop, ranks close up
    assert set(rest) == {"a", "c"} and rest["a"].ranks == {"image-image": 1} and rest["c"].ranks == {"bm25": 1}
    with pytest.raises(ConfigError, match="fusion"):
        fuse(channels, set(), method="borda")


def test_fuse_calibrated_score_fusion_uses_the_calibrator():
    from ragmed.pipeline import fuse

    def cal(domain, channel, s):  # a calibrator whose answer we can predict
        return {"image-image": s, "bm25": s / 10}[channel]

    channels = {"image-image": [Hit("a", 0.9, "image-image"), Hit("b", 0.2, "image-image")],
                "bm25": [Hit("b", 9.0, "bm25")]}
    out = fuse(channels, set(), method="score", k=10, calibrate=cal, weights={"bm25": 2.0})
    s = {e.case_id: e.score for e in out}
    assert s["b"] == pytest.approx((0.2 + 2 * 0.9) / 3) and s["a"] == pytest.approx(0.9 / 3)
    assert [e.case_id for e in out] == ["b", "a"]
    assert all(e.score == e.similarity for e in out)


@pytest.mark.parametrize("fusion", ["rrf", "score"])
def test_pipeline_retrieve_hybrid_channels(hy_index, fusion):
    from ragmed.pipeline import Pipeline

    index, cfg = hy_index
    cfg = cfg.model_copy(deep=True)
    cfg.retrieval.fusion = fusion
    pipe = Pipeline(cfg, index=index)
    img = pick_images(data_path(), "pathology", 1, offset=60)[0]
    r = pipe.retrieve(img, "Are there keratin pearls of squamous cell carcinoma?", domains=["pathology"])
    assert r.domains_searched == ["pathology"] and r.candidates
    chans = set().union(*(e.channels for e in r.candidates))
    assert {"image-image", "question-report", "bm25"} <= chans
    assert "bm25" in r.candidates[0].channels or "question-report" in r.candidates[0].channels
    assert len({e.case_id for e in r.candidates}) == len(r.candidates)
    scores = [e.score for e in r.candidates]
    assert scores == sorted(scores, reverse=True)
    for e in r.candidates:
        assert set(e.ranks) == set(e.channels) and 0 <= e.similarity <= 1
    with pytest.raises(ConfigError, match="unknown domain"):
        pipe.retrieve(img, "x", domains=["astrology"])


def test_bm25_and_calibration_built_lazily_for_an_index_without_them(hy_index, tmp_path):
    from ragmed.index.store import resolve_version_dir
    from ragmed.pipeline import Pipeline

    index, cfg = hy_index
    copy = tmp_path / "index"
    shutil.copytree(resolve_version_dir(index), copy)
    shutil.rmtree(copy / "bm25")
    (copy / "retrieval_calibration.json").unlink()
    pipe = Pipeline(cfg, index=copy)
    r = pipe.retrieve(None, "keratin pearls", domains=["pathology"])
    assert "bm25" in r.candidates[0].channels
    assert not (copy / "bm25").exists()  # built in memory, the index is not written to
    assert pipe.calibrator.data["domains"]["pathology"]["bm25"]["n"] >= 3
