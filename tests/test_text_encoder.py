"""The default text encoder: the lean BERT path equals sentence-transformers' own embeddings."""
from __future__ import annotations

import numpy as np


def test_minilm_lite_matches_sentence_transformers(text_encoder):
    from sentence_transformers import SentenceTransformer

    from ragmed.encoders.bert_lite import BertLite
    from ragmed.encoders.text import minilm_path

    assert isinstance(text_encoder.model, BertLite)
    texts = ["pleural effusion", "No pneumothorax. The heart size is normal and the lungs are clear.",
             "word " * 400, "", "Ünïcödé façade — naïve"]
    ours = text_encoder.encode_texts(texts)
    ref = SentenceTransformer(str(minilm_path()), device="cpu").encode(texts, normalize_embeddings=True)
    assert ours.shape == (5, 384) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-5
    # batch equivalence and determinism
    singles = np.concatenate([text_encoder.encode_texts([t]) for t in texts])
    assert np.abs(singles - ours).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
