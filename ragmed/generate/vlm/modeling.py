"""The image side of ragmed-vlm as transformers classes: the ragmed CNN tower as a vision model (``ragmed_tower``)
and its preprocessing as an image processor, registered with the Auto classes so that an ordinary
``LlavaForConditionalGeneration`` (``model_type: llava``) can use the tower, and ``AutoConfig`` /
``AutoModelForImageTextToText`` / ``AutoProcessor`` load a saved checkpoint once this module is imported.

The tower's output is its last feature map (256 channels; 4×4 at 112 px) average-pooled to
``image_size // patch_size`` per side, one token per cell, each standardised by a parameter-free layer norm. The
LLaVA projector (two linear layers) maps the tokens into the language model; ``vision_feature_select_strategy``
is ``full`` (no CLS token to drop) and ``vision_feature_layer`` is -1 (the only hidden state).
"""
from __future__ import annotations

from typing import Any

import numpy as np

TOWER_KEYS = ("widths", "stem", "stem_stride", "body_convs", "head_grid", "stats_bins", "mean", "std", "embed_dim",
              "space")


def _transformers():
    import torch
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return torch, PretrainedConfig, PreTrainedModel, BaseImageProcessor, BatchFeature, BaseModelOutputWithPooling


torch, PretrainedConfig, PreTrainedModel, BaseImageProcessor, BatchFeature, BaseModelOutputWithPooling = _transformers()


class RagmedTowerConfig(PretrainedConfig):
    """The ragmed CNN tower (``ragmed.encoders.tower.TowerConfig`` fields) plus the token grid it gives the VLM:
    ``image_size // patch_size`` tokens per side."""

    model_type = "ragmed_tower"
    base_config_key = "vision_config"

    def __init__(self, widths=(64, 128, 256), stem: int = 32, stem_stride: int = 4, body_convs: int = 1,
                 head_grid: int = 2, stats_bins: int = 0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.0625, 0.0625),
                 embed_dim: int = 384, space: str = "all-MiniLM-L6-v2", image_size: int = 112, patch_size: int = 28,
                 **kwargs):
        self.widths = list(widths)
        self.stem, self.stem_stride, self.body_convs = int(stem), int(stem_stride), int(body_convs)
        self.head_grid, self.stats_bins = int(head_grid), int(stats_bins)
        self.mean, self.std = list(mean), list(std)
        self.embed_dim, self.space = int(embed_dim), space
        self.image_size, self.patch_size = int(image_size), int(patch_size)
        self.hidden_size = int(self.widths[-1])
        super().__init__(**kwargs)

    def tower_config(self):
        from ragmed.encoders.tower import TowerConfig

        return TowerConfig.from_dict({k: getattr(self, k) for k in TOWER_KEYS})

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


class RagmedTowerModel(PreTrainedModel):
    """The tower as a transformers vision model. Its batch-norm layers always run with their running statistics
    (the tower is trained by ragmed.encoders and frozen here), also when the VLM is put in training mode."""

    config_class = RagmedTowerConfig
    base_model_prefix = "ragmed_tower"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules: list[str] = []

    def __init__(self, config: RagmedTowerConfig):
        super().__init__(config)
        from ragmed.encoders.tower import build_tower

        self.tower = build_tower(config.tower_config())
        self.post_init()

    def _init_weights(self, module):  # the tower's own initialisation (torch defaults) is kept
        pass

    def train(self, mode: bool = True):
        super().train(False)
        return self

    def forward(self, pixel_values, output_hidden_states: bool | None = None, return_dict: bool | None = True,
                **kwargs: Any):
        dtype = next(self.tower.parameters()).dtype
        f = self.tower.features(pixel_values.to(dtype))
        g = self.config.grid
        if f.shape[-1] != g or f.shape[-2] != g:
            f = torch.nn.functional.adaptive_avg_pool2d(f, g)
        tokens = torch.nn.functional.layer_norm(f.flatten(2).transpose(1, 2), (f.shape[1],))
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=tokens.mean(1),
                                          hidden_states=(tokens,))


class RagmedImageProcessor(BaseImageProcessor):
    """The tower's preprocessing (ragmed.encoders.tower): letterbox to a square with black, resize to ``size`` px
    (PIL, antialiased bilinear), Y'CbCr planes, ``(x/255 - mean) / std``. Accepts PIL images, arrays (H, W) or
    (H, W, 3) uint8 or float in [0, 1], or objects with ``to_rgb_uint8()`` (ragmed's MedicalImage)."""

    model_input_names = ["pixel_values"]

    def __init__(self, size: int = 112, image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.0625, 0.0625), **kwargs):
        super().__init__(**kwargs)
        self.size = int(size) if not isinstance(size, dict) else int(size.get("height", 112))
        self.image_mean, self.image_std = list(image_mean), list(image_std)

    @staticmethod
    def _array(image) -> np.ndarray:
        if hasattr(image, "to_rgb_uint8"):
            return image.to_rgb_uint8()
        if hasattr(image, "convert"):  # PIL
            mode = "L" if image.mode in ("L", "I", "I;16", "F") else "RGB"
            return np.asarray(image.convert(mode))
        a = np.asarray(image)
        if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):  # channels first
            a = np.moveaxis(a, 0, -1)
        if a.dtype != np.uint8:
            a = np.clip(np.rint(a.astype(np.float32) * (255.0 if float(a.max(initial=0)) <= 1.0 else 1.0)), 0,
                        255).astype(np.uint8)
        return a

    def letterbox(self, images) -> np.ndarray:
        """(n, size, size, 3) uint8 Y'CbCr."""
        from ragmed.encoders.tower import letterbox_array_uint8

        if not isinstance(images, (list, tuple)):
            images = [images]
        flat = []
        for im in images:  # a processor may pass [[img], [img]] (one list per prompt)
            flat.extend(im if isinstance(im, (list, tuple)) else [im])
        return np.stack([letterbox_array_uint8(self._array(im), self.size) for im in flat])

    def preprocess(self, images, return_tensors=None, **kwargs) -> BatchFeature:
        x = self.letterbox(images).astype(np.float32) / 255.0
        x = (x - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        return BatchFeature(data={"pixel_values": np.ascontiguousarray(x.transpose(0, 3, 1, 2))},
                            tensor_type=return_tensors)

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)


def register() -> None:
    """Make the Auto classes know the tower (idempotent)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    AutoConfig.register("ragmed_tower", RagmedTowerConfig, exist_ok=True)
    AutoModel.register(RagmedTowerConfig, RagmedTowerModel, exist_ok=True)
    AutoImageProcessor.register(RagmedTowerConfig, slow_image_processor_class=RagmedImageProcessor, exist_ok=True)


register()
