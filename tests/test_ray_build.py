"""The Ray Data build engine on a real local Ray cluster (2 CPUs, loopback): the same index as the local build
(same ids, same top-k for every query), bad rows reported, resumable shard by shard, atomic publication, and the
on-disk IVF layout. Skipped with the reason when Ray (extra ``scale``) is not installed."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from ragmed.config import PipelineConfig
from ragmed.corpus import read_corpus
from ragmed.index import build_index, open_index
from tests.corpus_utils import REPORTS, write_manifest, write_png

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ragmed[scale]')")
pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install 'ragmed[scale]')")

N = 22


def _cfg(**index):
    return PipelineConfig.from_dict({"encoders": {"text": {"name": "minilm"}, "image": {"name": "classic"}},
                                     "index": {"factory": "Flat", "batch_size": 8, **index}})


@pytest.fixture(scope="module")
def cluster():
    tmp = tempfile.mkdtemp(prefix="rayt")  # short: Ray's socket paths must stay under 107 characters
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tmp)
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("raycorpus")
    rows = []
    for i in range(N):
        write_png(root / f"img{i}.png", seed=i, kind=i)
        rows.append({"id": f"case{i}", "image": f"img{i}.png",
                     "report": f"{REPORTS[i % 4]} Comparison: study {i}.", "split": "train"})
    rows.insert(5, {"id": "bad1", "image": "nope.png", "report": REPORTS[0]})
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    rows.insert(12, {"id": "bad2", "image": "broken.png", "report": REPORTS[1]})
    return read_corpus(write_manifest(root / "manifest.csv", rows))


@pytest.fixture(scope="module")
def local(corpus, tmp_path_factory, text_encoder):
    out = tmp_path_factory.mktemp("local") / "idx"
    build_index(corpus, out, _cfg(), text_encoder=text_encoder, progress=False)
    return out


def _queries(corpus, text_encoder):
    from ragmed.encoders import create_encoder
    from ragmed.io import load_image

    imgs = create_encoder("classic").encode_images([load_image(corpus.root / f"img{i}.png") for i in range(N)])
    txt = text_encoder.encode_texts(["left apical pneumothorax", "consolidation with effusion", "normal chest",
                                     "heart failure with cardiomegaly"])
    return imgs, txt


def _same_index(a_dir, b_dir, corpus, text_encoder):
    a, b = open_index(a_dir), open_index(b_dir)
    assert (a.count("cases"), a.count("images")) == (b.count("cases"), b.count("images")) == (N, N)
    assert a.skipped() == b.skipped() and {s["case_id"] for s in b.skipped()} == {"bad1", "bad2"}
    ra = a.db.execute("SELECT rowid, case_id, domain FROM cases ORDER BY rowid").fetchall()
    rb = b.db.execute("SELECT rowid, case_id, domain FROM cases ORDER BY rowid").fetchall()
    assert [tuple(r) for r in ra] == [tuple(r) for r in rb]  # the same vector ids
    imgs, txt = _queries(corpus, text_encoder)
    for kind, q in (("image", imgs), ("text", txt)):
        ha, hb = a.search(kind, q, 5), b.search(kind, q, 5)
        assert [[h.case_id for h in x] for x in ha] == [[h.case_id for h in x] for x in hb]
    assert a.manifest["encoders"] == b.manifest["encoders"]
    ca, cb = a.manifest["calibration"], b.manifest["calibration"]
    assert sorted(ca) == sorted(cb) and all(ca[ch] == pytest.approx(cb[ch], abs=1e-5) for ch in ca)


def test_ray_build_equals_local_and_resumes(cluster, corpus, local, tmp_path, text_encoder):
    """Killed after two shards, re-run: only the missing shards are encoded, by both actors of the pool, and the
    published index equals the local build's (same ids, same top-k, same calibration)."""
    from ragmed.index.ray_build import ray_build_index

    out = tmp_path / "ray"
    with pytest.raises(KeyboardInterrupt):
        ray_build_index(corpus, out, _cfg(), workers=2, shard_size=4, text_encoder=text_encoder,
                        stop_after_shards=2)
    written = sorted(p.name for p in (out / ".staging-ray" / "shards").glob("shard-*.parquet"))
    assert written == ["shard-000000.parquet", "shard-000001.parquet"] and not (out / "current").exists()
    rep = ray_build_index(corpus, out, _cfg(), workers=2, shard_size=4, text_encoder=text_encoder)
    stats = rep.timings["shards"]
    assert rep.resumed_from == 8 and [s["shard"] for s in stats] == [2, 3, 4, 5]
    assert (rep.n_cases, rep.n_images, len(rep.skipped)) == (N, N, 2)
    assert sum(s["n_cases"] for s in stats) == N - 8 and sum(s["n_skipped"] for s in stats) == 1  # bad2 (bad1: at read)
    # the pool has two actors; on a loaded machine the first one up may take every shard (the benchmark's
    # bench_scale_ray_*.json record both working), so only the bound is asserted here
    assert 1 <= len({s["pid"] for s in stats}) <= 2
    _same_index(local, out, corpus, text_encoder)
    assert os.readlink(out / "current") == rep.version and not (out / ".staging-ray").exists()
    assert open_index(out).manifest["build"] == {"engine": "ray", "layout": "monolithic"}


def test_ray_build_ondisk_ivf(cluster, corpus, local, tmp_path, text_encoder):
    """The on-disk layout: IVF lists merged from per-shard blocks; with every list probed it is exact, so its top-k
    equals the local Flat index's."""
    from ragmed.index.ray_build import ray_build_index

    cfg = _cfg(factory="IVF2,Flat", nprobe=2)
    rep = ray_build_index(corpus, tmp_path / "disk", cfg, workers=1, shard_size=8, layout="ondisk",
                          text_encoder=text_encoder)
    vdir = Path(tmp_path / "disk" / "current").resolve()
    assert (vdir / "domains" / "all" / "image.ivfdata").stat().st_size > 0 and rep.n_cases == N
    a, b = open_index(local), open_index(tmp_path / "disk")
    imgs, txt = _queries(corpus, text_encoder)
    for kind, q in (("image", imgs), ("text", txt)):
        assert ([[h.case_id for h in x] for x in a.search(kind, q, 5)]
                == [[h.case_id for h in x] for x in b.search(kind, q, 5)])
    scores = np.array([[h.score for h in x] for x in b.search("text", txt, 5)])
    assert (np.diff(scores, axis=1) <= 1e-6).all()
