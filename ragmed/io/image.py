"""The :class:`MedicalImage` record that every later stage receives."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class MedicalImage:
    """A decoded, normalised, de-identified image.

    ``pixels`` is float32 in [0, 1]: shape (H, W) for grayscale, (H, W, 3) for colour.
    ``source`` is the path as the caller should show it (relative to the corpus root when one is given).
    ``content_hash`` is the SHA-256 of the file's bytes (for a series: of the chosen slice's file).
    ``meta`` holds only values that survive PS3.15 de-identification, never names, identifiers, dates or free-text
    descriptions. DICOM: ``frames``, ``frame`` (the 0-based frame decoded), ``transfer_syntax`` and ``sop_class``
    (dictionary names of well-known UIDs), ``photometric``, ``laterality``; a series adds ``series`` (the directory),
    ``series_files``, ``series_positions``, ``series_skipped_files``. PNG / JPEG: ``bit_depth``.
    """

    pixels: np.ndarray
    source: str
    content_hash: str
    format: str  # "dicom" | "png" | "jpeg"
    modality: str | None = None  # DICOM Modality code (CR, DX, CT, MR, US, ...), None when unknown
    body_part: str | None = None  # DICOM Body Part Examined, upper case, None when unknown
    view: str | None = None  # View Position (PA, AP, LAT ...), None when unknown
    spacing: tuple[float, float] | None = None  # (row, column) pixel spacing in mm
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def is_color(self) -> bool:
        return self.pixels.ndim == 3

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape)

    def to_uint8(self) -> np.ndarray:
        return np.clip(np.rint(self.pixels * 255.0), 0, 255).astype(np.uint8)

    def to_rgb_uint8(self) -> np.ndarray:
        """(H, W, 3) uint8, grayscale replicated into three channels."""
        a = self.to_uint8()
        return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a

    def to_gray(self) -> np.ndarray:
        """(H, W) float32 in [0, 1]; colour converted with ITU-R BT.601 luma weights."""
        if self.pixels.ndim == 2:
            return self.pixels
        return (self.pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32)


def content_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
