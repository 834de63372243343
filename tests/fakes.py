"""Fake encoders for plumbing tests only (named as fakes): deterministic, fast, no weights."""
from __future__ import annotations

import hashlib
import time

import numpy as np

from ragmed.encoders.base import BaseImageEncoder, BaseTextEncoder


class FakeHashTextEncoder(BaseTextEncoder):
    """FAKE text encoder: bag of hashed words. Similar word sets → similar vectors. For plumbing tests only."""

    def __init__(self, dim: int = 64):
        self.dim, self.id, self.space = dim, f"fake-hash-text-{dim}", f"fake-hash-{dim}"

    def _encode_text_batch(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
            out[i, 0] += 1e-3
        return out


class FakeSlowImageEncoder(BaseImageEncoder):
    """FAKE image encoder: mean intensity histogram, sleeping per batch so a test can kill a build mid-way."""

    def __init__(self, delay: float = 0.3, dim: int = 16):
        self.delay, self.dim, self.id, self.space = delay, dim, f"fake-slow-image-{dim}", None

    def _encode_image_batch(self, images):
        time.sleep(self.delay)
        return np.stack([np.histogram(im.to_gray(), bins=self.dim, range=(0, 1))[0].astype(np.float32) + 1e-3
                         for im in images])
