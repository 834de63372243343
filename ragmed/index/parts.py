"""Raw vector parts: ``vectors/<domain>/<kind>-<n>.npz`` (ids int64, vectors float32), written atomically."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def write_part(root: Path, domain: str, kind: str, number: int, ids: np.ndarray, vecs: np.ndarray) -> Path:
    d = root / domain
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"{kind}-{number:06d}.npz"
    tmp = d / f".{kind}-{number:06d}.tmp.npz"
    np.savez(tmp, ids=np.asarray(ids, dtype=np.int64), vectors=np.asarray(vecs, dtype=np.float32))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final


def list_parts(root: Path, domain: str, kind: str) -> list[Path]:
    d = root / domain
    return sorted(d.glob(f"{kind}-*.npz")) if d.exists() else []


def load_parts(root: Path, domain: str, kind: str, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    ids, vecs = [], []
    for p in list_parts(root, domain, kind):
        with np.load(p) as z:
            ids.append(z["ids"])
            vecs.append(z["vectors"])
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros((0, dim or 0), dtype=np.float32)
    return np.concatenate(ids), np.concatenate(vecs).astype(np.float32, copy=False)


def domains_in(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []
