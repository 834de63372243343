"""A classic image descriptor (no learning): downsampled pixels plus an intensity histogram and gradient energy.

It stands in where no learned image encoder is configured and is the baseline the trained encoder must beat.
It lives in its own space (``space=None``): it supports image→image search, not image→text.
"""
from __future__ import annotations

import numpy as np

from ragmed.encoders.base import BaseImageEncoder


class ClassicDescriptor(BaseImageEncoder):
    def __init__(self, size: int = 16, bins: int = 32):
        self.size, self.bins = int(size), int(bins)
        self.id = f"classic-{self.size}px-{self.bins}bins"
        self.dim = self.size * self.size + self.bins + 3
        self.space = None

    def describe(self, gray: np.ndarray) -> np.ndarray:
        from PIL import Image

        g = np.asarray(gray, dtype=np.float32)
        small = np.asarray(Image.fromarray(g).resize((self.size, self.size), Image.BILINEAR), dtype=np.float32)
        small = (small - small.mean()) / (small.std() + 1e-6)
        hist, _ = np.histogram(g, bins=self.bins, range=(0.0, 1.0))
        hist = np.sqrt(hist / max(1, g.size)).astype(np.float32)
        gy, gx = np.gradient(np.asarray(Image.fromarray(g).resize((64, 64), Image.BILINEAR), dtype=np.float32))
        h, w = g.shape
        shape = np.array([np.log(max(h, 1) / max(w, 1)), float(np.abs(gx).mean() + np.abs(gy).mean()) * 10,
                          float(g.mean())], dtype=np.float32)
        return np.concatenate([small.ravel() / self.size, hist * 2, shape]).astype(np.float32)

    def _encode_image_batch(self, images) -> np.ndarray:
        return np.stack([self.describe(im.to_gray()) for im in images])
