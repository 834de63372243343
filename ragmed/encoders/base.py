"""Encoder protocols and the small base class that does batching and normalisation.

Backends write ``_encode_image_batch`` / ``_encode_text_batch`` only; the base gives ``encode_images`` /
``encode_texts`` returning float32 ``(n, dim)`` arrays, L2-normalised (cosine similarity = inner product).
``space`` names the embedding space: an image encoder whose ``space`` equals a text encoder's ``space`` can be
compared with it (image→report and text→image search); ``None`` means image-only.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from ragmed.io import MedicalImage


@runtime_checkable
class ImageEncoder(Protocol):
    id: str
    dim: int
    space: str | None

    def encode_images(self, images: Sequence["MedicalImage"]) -> np.ndarray: ...


@runtime_checkable
class TextEncoder(Protocol):
    id: str
    dim: int
    space: str | None

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


class BaseImageEncoder:
    id: str = "base-image"
    dim: int = 0
    space: str | None = None
    batch_size: int = 32

    def encode_images(self, images: Sequence["MedicalImage"]) -> np.ndarray:
        if not len(images):
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._encode_image_batch(list(images[i:i + self.batch_size]))
                 for i in range(0, len(images), self.batch_size)]
        out = l2_normalise(np.concatenate(parts, axis=0))
        if out.shape != (len(images), self.dim):
            raise ValueError(f"{self.id} returned shape {out.shape}, expected {(len(images), self.dim)}")
        return out

    def _encode_image_batch(self, images: list["MedicalImage"]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class BaseTextEncoder:
    id: str = "base-text"
    dim: int = 0
    space: str | None = None
    batch_size: int = 64

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a sequence of strings, not one string")
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        out = l2_normalise(self._encode_text_batch([t or "" for t in texts]))
        if out.shape != (len(texts), self.dim):
            raise ValueError(f"{self.id} returned shape {out.shape}, expected {(len(texts), self.dim)}")
        return out

    def _encode_text_batch(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError
