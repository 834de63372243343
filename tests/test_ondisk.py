"""Sharded and on-disk FAISS: the same results as the monolithic index over the same vectors, and the IndexStore
reads every layout (on-disk lists stay valid after the version directory moves)."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from ragmed.index.faiss_utils import build_faiss, set_search_params
from ragmed.index.ondisk import (empty_like, ivf_in_memory, read_domain_index, train_empty, write_ondisk,
                                 write_shards)


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    """Tiny trainings: OpenMP threads only add spinning on a busy 2-core machine (restored afterwards)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _data(n=6000, d=32, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, d))
    x = centers[rng.integers(0, 40, n)] + 0.3 * rng.standard_normal((n, d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    ids = (np.arange(n) * 3 + 7).astype(np.int64)  # explicit, non-contiguous ids: shards must keep them
    q = x[rng.choice(n, 64, replace=False)] + 0.05 * rng.standard_normal((64, d)).astype(np.float32)
    return ids, x, np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=np.float32)


def _blocks(ids, x, n):
    b = np.linspace(0, len(ids), n + 1).astype(int)
    return [(ids[i:j], x[i:j]) for i, j in zip(b[:-1], b[1:])]


@pytest.mark.parametrize("factory", ["IVF64,Flat", "IVF64,PQ8x4"])
def test_ondisk_ivf_equals_in_memory(tmp_path, factory):
    ids, x, q = _data()
    trained = train_empty(factory, x.shape[1], x[::3])
    mono = empty_like(trained)
    mono.add_with_ids(x, ids)
    set_search_params(mono, nprobe=8)
    n = write_ondisk(trained, _blocks(ids, x, 5), tmp_path / "v1" / "image.faiss")
    assert n == len(ids) and (tmp_path / "v1" / "image.ivfdata").stat().st_size > 0
    assert not list(tmp_path.glob("v1/.*blocks*"))  # the temporary blocks are gone
    os.replace(tmp_path / "v1", tmp_path / "v2")  # a published version moves: the lists must follow
    disk = read_domain_index(tmp_path / "v2", "image", nprobe=8)
    import faiss

    ivf = faiss.extract_index_ivf(disk)
    assert isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.OnDiskInvertedLists)
    d1, i1 = mono.search(q, 10)
    d2, i2 = disk.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, rtol=1e-5, atol=1e-6)
    back = ivf_in_memory(tmp_path / "v2" / "image.faiss")
    set_search_params(back, nprobe=8)
    np.testing.assert_array_equal(back.search(q, 10)[1], i1)


@pytest.mark.parametrize("factory", ["Flat", "IVF64,Flat"])
def test_shards_equal_monolithic(tmp_path, factory):
    ids, x, q = _data()
    mono = build_faiss(x, ids, factory) if factory == "Flat" else None
    trained = train_empty(factory, x.shape[1], x[::3])
    if mono is None:
        mono = empty_like(trained)
        mono.add_with_ids(x, ids)
    set_search_params(mono, nprobe=8)
    assert write_shards(trained, _blocks(ids, x, 3), tmp_path, "text") == len(ids)
    shards = read_domain_index(tmp_path, "text", nprobe=8)
    assert shards.ntotal == len(ids)
    d1, i1 = mono.search(q, 10)
    d2, i2 = shards.search(q, 10)
    assert set(i2.ravel()) <= set(ids.tolist())  # the shards kept the explicit ids (successive_ids=False)
    np.testing.assert_allclose(d1, d2, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(i1, i2)


def test_store_reads_ondisk_and_sharded_layouts(tmp_path, text_encoder):
    """A built index re-laid out on disk and as shards answers the same queries with the same cases."""
    from ragmed.config import PipelineConfig
    from ragmed.corpus import read_corpus
    from ragmed.index import build_index, open_index
    from ragmed.index.ondisk import shard_domain_index
    from ragmed.index.parts import load_parts
    from tests.corpus_utils import png_corpus

    corpus = read_corpus(png_corpus(tmp_path / "c", 12))
    cfg = PipelineConfig.from_dict({"encoders": {"text": {"name": "minilm"}, "image": None},
                                    "index": {"factory": "Flat"}})
    build_index(corpus, tmp_path / "idx", cfg, text_encoder=text_encoder, progress=False)
    queries = text_encoder.encode_texts(["pneumothorax at the left apex", "normal heart size", "pleural effusion"])
    want = [[h.case_id for h in hits] for hits in open_index(tmp_path / "idx").search("text", queries, 5)]
    vdir = open_index(tmp_path / "idx").version_dir
    shard_domain_index(vdir, "all", "text", 3)
    assert not (vdir / "domains" / "all" / "text.faiss").exists()
    store = open_index(tmp_path / "idx")
    assert [[h.case_id for h in hits] for hits in store.search("text", queries, 5)] == want
    # on disk: an IVF over the same vectors, compared with the same IVF in memory
    ids, vecs = load_parts(vdir / "vectors", "all", "text")
    trained = train_empty("IVF2,Flat", vecs.shape[1], vecs)
    mono = empty_like(trained)
    mono.add_with_ids(vecs, ids)
    set_search_params(mono, nprobe=2)
    shutil.rmtree(vdir / "domains" / "all")
    (vdir / "domains" / "all").mkdir()
    write_ondisk(trained, [(ids[:5], vecs[:5]), (ids[5:], vecs[5:])], vdir / "domains" / "all" / "text.faiss")
    store = open_index(tmp_path / "idx")
    got = store.search("text", queries, 5)
    _, gi = mono.search(queries, 5)
    rowid_to_case = {r[0]: r[1] for r in store.db.execute("SELECT rowid, case_id FROM cases")}
    assert [[h.case_id for h in hits] for hits in got] == [[rowid_to_case[int(i)] for i in row] for row in gi]
