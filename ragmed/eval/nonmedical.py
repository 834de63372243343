"""Synthetic images that are not medical (for the router and OOD evaluations, and their tests): random noise, a blank
frame, a rendered text page, a landscape-like photo."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def make_nonmedical(out: Path, seed: int = 0) -> dict[str, Path]:
    """Four images that are not medical: random noise, a blank frame, a rendered text page, a landscape-like
    synthetic photo (sky, grass, sun, a house)."""
    from PIL import Image, ImageDraw

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = {}
    p = out / "noise.png"
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(p)
    files["random-noise"] = p
    p = out / "blank.png"
    Image.fromarray(np.full((256, 256), 128, np.uint8)).save(p)
    files["blank-frame"] = p
    doc = Image.new("RGB", (400, 520), "white")
    d = ImageDraw.Draw(doc)
    words = "the quarterly report shows revenue growth across all regions and products".split()
    for i in range(22):
        d.text((30, 20 + i * 22), " ".join(words[(i + j) % len(words)] for j in range(8)), fill="black")
    p = out / "document.png"
    doc.save(p)
    files["text-document"] = p
    yy, xx = np.mgrid[0:240, 0:320] / 240.0
    img = np.stack([0.35 + 0.2 * yy, 0.6 + 0.2 * yy, 0.95 - 0.1 * yy], -1)
    ground = yy > 0.6
    m = int(ground.sum())
    img[ground] = np.stack([0.2 + 0.1 * rng.random(m), 0.55 + 0.1 * rng.random(m), 0.15 + 0.05 * rng.random(m)], -1)
    img[(xx - 1.0) ** 2 + (yy - 0.2) ** 2 < 0.01] = [1.0, 0.9, 0.3]
    img[(xx > 0.3) & (xx < 0.6) & (yy > 0.4) & (yy < 0.75)] = [0.7, 0.2, 0.15]
    p = out / "photo.jpg"
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(p)
    files["natural-photo"] = p
    return files


__all__ = ["make_nonmedical"]
