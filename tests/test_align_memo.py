"""ragmed.align.memo: the text-vector memory that makes pair building and the alignment evaluation cheaper must give
the wrapped encoder's vectors and the same answers (real MiniLM, a real small VQA-RAD index)."""
from __future__ import annotations

import numpy as np
import pytest

from ragmed.align.memo import MemoTextEncoder, memo_pipeline
from tests.conftest import data_path


def test_memo_gives_the_wrapped_encoders_vectors_and_encodes_each_text_once(text_encoder):
    memo = MemoTextEncoder(text_encoder)
    assert (memo.id, memo.dim, memo.space) == (text_encoder.id, text_encoder.dim, text_encoder.space)
    texts = ["Is there a pleural effusion?", "Is the liver enlarged?", "Is there a pleural effusion?", ""]
    got = memo.encode_texts(texts)
    want = text_encoder.encode_texts(texts)
    assert got.shape == want.shape == (4, text_encoder.dim)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert memo.stats() == {"texts_encoded": 3, "texts_from_memory": 1, "held": 3}
    again = memo.encode_texts(["Is the liver enlarged?", "Is there a mass?"])
    np.testing.assert_array_equal(again[0], got[1])  # from memory: the very same vector
    np.testing.assert_allclose(again[1], text_encoder.encode_texts(["Is there a mass?"])[0], atol=1e-5)
    assert memo.stats()["texts_encoded"] == 4 and memo.stats()["texts_from_memory"] == 2
    assert memo.encode_texts([]).shape == (0, text_encoder.dim)
    with pytest.raises(TypeError):
        memo.encode_texts("one string")
    small = MemoTextEncoder(text_encoder, max_items=2)
    small.encode_texts(["a", "b", "c"])
    assert small.stats()["held"] == 2


def test_memo_pipeline_answers_as_the_plain_one(tmp_path):
    """Every answer (retrieval + the extractive generator + the abstention step, which both use the text encoder) is the
    same with the memory as without; the memory is used (the index's question lines recur across questions)."""
    pytest.importorskip("faiss")
    if not data_path("vqa-rad", "train.json").exists():
        pytest.skip("VQA-RAD not found under $RAGMED_DATA")
    from tests.corpus_utils import vqa_rad_split_pipeline

    from ragmed.eval.vqa import short_answer
    from ragmed.io import load_image

    plain, images, rows, train = vqa_rad_split_pipeline(tmp_path, 3, "memo-test", 5, "{name: extractive}")
    memo = memo_pipeline(tmp_path / "idx", tmp_path / "memo-test.yaml")
    assert isinstance(memo.text_encoder, MemoTextEncoder)
    qs = [r for r in rows if r["image_name"] in set(train) and r["answer_type"].strip().upper() == "CLOSED"][:4]
    assert len(qs) >= 3
    for r in qs:
        img = load_image(images / r["image_name"])
        got = []
        for p in (plain, memo):
            ret = p.retrieve(img, r["question"], exclude_hashes={img.content_hash})
            ans = p.answer(ret, r["question"], task="closed")
            got.append((short_answer(ans), [e.case_id for e in ans.evidence], ans.insufficient_evidence))
        assert got[0] == got[1]
    assert memo.text_encoder.stats()["texts_from_memory"] > 0
