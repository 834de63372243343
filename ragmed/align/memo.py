"""Cheaper pair building and evaluation: the text vectors the answer step asks for, computed once per text.

Where the time of ``ragmed align pairs`` goes (measured, ``eval/align_pair_cost.py``): retrieval already runs once per
question and is reused by every condition (with retrieval, without it, image replaced); the generator answers three
times; and the pipeline's abstention step (``abstain_below`` → the evidence vote) encodes the question and every
question–answer line of each retrieved case with the text encoder. Those lines come from the training index, so the
same ones return question after question (and, in ``ragmed eval align``, once per generator for the same question).
Measured with ragmed-vlm on 12 training questions (``eval/results/align_pair_cost.json``) the memory saves little:
18.0 → 17.6 s per question (median), because the generator's three answers dominate.

:class:`MemoTextEncoder` wraps the pipeline's text encoder and keeps each text's vector: texts not seen yet are
encoded together in one call, as before; a text seen before costs a dictionary lookup. The vectors are the wrapped encoder's own (same id, dimension and space, so the
index's encoder check passes), equal to those of a batched call up to float rounding between batch compositions.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ragmed.encoders.base import BaseTextEncoder


class MemoTextEncoder(BaseTextEncoder):
    """A text encoder that remembers each text's vector (at most ``max_items``; the oldest are dropped first)."""

    def __init__(self, inner: BaseTextEncoder, max_items: int = 200_000):
        self.inner = inner
        self.id, self.dim, self.space = inner.id, inner.dim, inner.space
        self.batch_size = getattr(inner, "batch_size", 64)
        self.max_items = int(max_items)
        self.vectors: dict[str, np.ndarray] = {}
        self.hits = self.misses = 0

    def __getattr__(self, name: str) -> Any:  # anything else (warm_up, path, model …) is the wrapped encoder's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a sequence of strings, not one string")
        texts = [t or "" for t in texts]
        todo = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        self.misses += len(todo)
        self.hits += len(texts) - len(todo)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        new = dict(zip(todo, self.inner.encode_texts(todo))) if todo else {}
        out = np.stack([new[t] if t in new else self.vectors[t] for t in texts]).astype(np.float32, copy=False)
        self.vectors.update(new)
        while len(self.vectors) > self.max_items:
            self.vectors.pop(next(iter(self.vectors)))
        return out

    def stats(self) -> dict[str, int]:
        return {"texts_encoded": self.misses, "texts_from_memory": self.hits, "held": len(self.vectors)}


def memo_pipeline(index_dir, pipeline=None, memo: bool = True):
    """``Pipeline.for_index(index_dir, pipeline)`` whose text encoder is a :class:`MemoTextEncoder` around the
    configured one (every component that uses the text encoder gets the wrapped one). ``memo=False``: the plain
    pipeline (for measuring the difference)."""
    from ragmed.pipeline import Pipeline

    p = Pipeline.for_index(index_dir, pipeline)
    if not memo:
        return p
    return Pipeline.for_index(index_dir, pipeline, text_encoder=MemoTextEncoder(p.text_encoder))
