"""Pure display transforms: scale to [0, 1]. pydicom's own LUT functions do the DICOM parts."""
from __future__ import annotations

import numpy as np


def minmax_normalise(a: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    """Robust min-max to [0, 1] using percentiles (ignores a few extreme pixels)."""
    a = np.asarray(a, dtype=np.float32)
    if a.size == 0:
        return a
    lo, hi = np.percentile(a, [lo_pct, hi_pct]) if a.size > 64 else (float(a.min()), float(a.max()))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if hi <= lo:
        return np.zeros_like(a, dtype=np.float32)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def window(a: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear window (DICOM PS3.3 C.11.2.1.2 style) to [0, 1]."""
    a = np.asarray(a, dtype=np.float32)
    width = max(float(width), 1.0)
    lo = center - 0.5 - (width - 1) / 2
    return np.clip((a - lo) / (width - 1), 0.0, 1.0).astype(np.float32)
