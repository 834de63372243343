"""The bundled default image tower: a small convolutional network written with ``torch.nn`` and its preprocessing.

Input is a square letterboxed image in Y'CbCr: the luma plane carries a grayscale image natively and the two
chroma planes are zero for grayscale input, so a CT, an X-ray or an MRI is never tiled into fake RGB, while a
dermoscopy, pathology or microscopy image keeps its colour. Output: a 384-d vector in the frozen text encoder's
space (all-MiniLM-L6-v2), so image→image, image→report and text→image search share one space.

Preprocessing (``preprocess.json``): pad the image to a square with black (luma 0, chroma neutral), centred;
resize to ``size`` px with PIL's antialiased bilinear filter; convert to Y'CbCr (ITU-R BT.601, as PIL);
then ``(x/255 - mean) / std`` per plane.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

ARCH = "ragmed-cnn-v1"


@dataclass
class PreprocessConfig:
    size: int = 112
    resize: str = "letterbox"  # pad to square (centred), then resize: nothing is cropped away
    interpolation: str = "bilinear"  # PIL, antialiased
    color: str = "ycbcr"  # planes: luma, blue-difference, red-difference; grayscale → chroma 0
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.25, 0.0625, 0.0625])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def letterbox_uint8(pixels: np.ndarray, size: int) -> np.ndarray:
    """``pixels`` float [0, 1] (H, W) or (H, W, 3) → (size, size, 3) uint8 Y'CbCr, letterboxed."""
    a = np.clip(np.rint(np.asarray(pixels, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    return letterbox_array_uint8(a, size)


def letterbox_array_uint8(a: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) RGB → (size, size, 3) uint8 Y'CbCr, letterboxed (grayscale: chroma = 128)."""
    from PIL import Image

    gray = a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 1)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    h, w = a.shape[:2]
    s = max(h, w)
    scale = size / s
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    im = Image.fromarray(a, mode="L" if gray else "RGB").resize((nw, nh), Image.BILINEAR)
    out = np.empty((size, size, 3), dtype=np.uint8)
    out[..., 0] = 0
    out[..., 1:] = 128
    top, left = (size - nh) // 2, (size - nw) // 2
    if gray:
        out[top:top + nh, left:left + nw, 0] = np.asarray(im)
    else:
        out[top:top + nh, left:left + nw] = np.asarray(im.convert("YCbCr"))
    return out


def to_tensor_batch(arrs: np.ndarray, pre: PreprocessConfig):
    """(n, S, S, 3) uint8 → normalised float tensor (n, 3, S, S)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(arrs)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class TowerConfig:
    arch: str = ARCH
    widths: list[int] = field(default_factory=lambda: [64, 128, 256])
    stem: int = 32
    stem_stride: int = 4  # a patchify stem (kernel = stride): cheap at full resolution
    body_convs: int = 1  # 3×3 convolutions in each stage's residual branch
    head_grid: int = 0  # >0: also average-pool the last map to grid×grid and flatten (keeps coarse layout)
    stats_bins: int = 0  # >0: a global-statistics branch: luma histogram (bins) + 8×8 thumbnail of the input
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])  # the input normalisation (stats branch)
    std: list[float] = field(default_factory=lambda: [0.25, 0.0625, 0.0625])
    embed_dim: int = 384
    space: str = "all-MiniLM-L6-v2"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TowerConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def build_tower(cfg: TowerConfig):
    """Patchify stem then one residual stage per width (stride 2 each), global average + max pooling, and a
    linear projection into the text space."""
    import torch
    from torch import nn

    def conv_bn(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class Stage(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.down = conv_bn(cin, cout, 2)
            body = []
            for i in range(cfg.body_convs):
                if i:
                    body.append(nn.ReLU(inplace=True))
                body += [nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)]
            self.body = nn.Sequential(*body)
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            x = self.down(x)
            return self.act(x + self.body(x))

    class Tower(nn.Module):
        def __init__(self):
            super().__init__()
            k = cfg.stem_stride
            layers = [nn.Sequential(nn.Conv2d(3, cfg.stem, k, k, 0, bias=False), nn.BatchNorm2d(cfg.stem),
                                    nn.ReLU(inplace=True))]
            cin = cfg.stem
            for w in cfg.widths:
                layers.append(Stage(cin, w))
                cin = w
            self.features = nn.Sequential(*layers)
            n = cin * (2 + cfg.head_grid * cfg.head_grid)
            if cfg.stats_bins:
                n += cfg.stats_bins + 3 * 8 * 8
            self.head = nn.Sequential(nn.LayerNorm(n), nn.Linear(n, cfg.embed_dim))

        def forward(self, x):
            f = self.features(x)
            parts = [f.mean(dim=(2, 3)), f.amax(dim=(2, 3))]
            if cfg.head_grid:
                parts.append(nn.functional.adaptive_avg_pool2d(f, cfg.head_grid).flatten(1))
            if cfg.stats_bins:
                parts += self.stats(x)
            return self.head(torch.cat(parts, dim=1))

        def stats(self, x):
            """Per-image global statistics of the input (no gradient needed): sqrt of the luma histogram and an
            8×8 thumbnail of the three planes."""
            b, k = x.shape[0], cfg.stats_bins
            y = (x[:, 0] * cfg.std[0] + cfg.mean[0]).clamp(0, 1).flatten(1)
            idx = (y * (k - 1e-3)).long()
            hist = torch.zeros(b, k, dtype=x.dtype, device=x.device).scatter_add_(1, idx, torch.ones_like(y))
            hist = (hist / y.shape[1]).sqrt()
            thumb = nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
            return [hist, thumb]

    return Tower()
