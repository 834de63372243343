"""The OOD checks added for issue 12 item 4: writing on paper (a photographed / scanned page: smooth paper carrying
ink strokes, no black surround) and grey pictures of objects spread evenly over a plain background are refused; grey
medical images from the shared data stay accepted. Synthetic inputs are drawn here; the full measurement is
eval/safety_ood.py (eval/results/safety_ood.json)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ragmed.domains.ood import check_image
from ragmed.errors import DomainError
from ragmed.io import load_image


def _save(a: np.ndarray, p: Path) -> Path:
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(p)
    return p


def _handwriting_on_paper(p: Path) -> Path:
    """A sheet lit from one side (grey, a gradient) with pen strokes: no pure white, no black."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:300, 0:500]
    page = Image.fromarray((150 + 40 * xx / 500 + 10 * yy / 300).astype(np.uint8))
    d = ImageDraw.Draw(page)
    for line in range(12):
        y = 18 + line * 23
        x = 20
        while x < 460:
            pts = [(x + i * 3, y + int(6 * np.sin(i / 2.0 + rng.random()))) for i in range(8)]
            d.line(pts, fill=int(60 + 20 * rng.random()), width=3)
            x += 26 + int(10 * rng.random())
    page.save(p)
    return p


def _coins_on_a_table(p: Path) -> Path:
    a = np.full((300, 380), 110.0)
    yy, xx = np.mgrid[0:300, 0:380]
    for cy in range(40, 300, 70):
        for cx in range(40, 380, 70):
            a[(yy - cy) ** 2 + (xx - cx) ** 2 < 24 ** 2] = 190
    return _save(a + np.random.default_rng(0).normal(0, 6, a.shape), p)


def _blue_and_warm_photo(p: Path) -> Path:
    """A scene in blue and skin tones with sharp detail (a uniform against a face, in blocks and stripes)."""
    rng = np.random.default_rng(2)
    a = np.zeros((240, 320, 3))
    a[:, :160] = [40, 60, 140]  # navy
    a[:, 160:] = [215, 160, 120]  # skin
    a[60:180, 100:220] = [235, 225, 215]  # a white shirt / background patch
    for _ in range(120):
        y, x = rng.integers(0, 230), rng.integers(0, 310)
        a[y:y + 8, x:x + 8] = a[y:y + 8, x:x + 8] * rng.uniform(0.4, 1.2)
    a[::6] *= 0.7  # fabric stripes: sharp detail
    return _save(a, p)


@pytest.mark.parametrize("make,why", [(_handwriting_on_paper, "writing on paper"),
                                      (_coins_on_a_table, "weak large-scale structure"),
                                      (_blue_and_warm_photo, "photograph")])
def test_paper_and_evenly_spread_objects_are_refused(tmp_path, make, why):
    img = load_image(make(tmp_path / "x.png"))
    with pytest.raises(DomainError, match=why):
        check_image(img)


def test_grey_medical_images_stay_accepted():
    from tests.conftest import data_path

    files = sorted((data_path("vqa-rad") / "images").glob("*.jpg"))[:25]
    files += sorted((data_path("images") / "pocus-lus").rglob("*.png"))[:5] + \
        sorted((data_path("images") / "pocus-lus").rglob("*.jpg"))[:5]
    assert files
    for f in files:
        check_image(load_image(f))  # raises on a refusal
