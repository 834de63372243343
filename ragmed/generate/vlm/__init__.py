"""ragmed-vlm: ragmed's own small vision-language model (LLaVA architecture: the ragmed CNN tower → a two-layer
projector → SmolLM2-135M-Instruct with a LoRA adapter), trained on a CPU by eval/train_vlm.py and shipped in
``weights/ragmed-vlm``. Importing this package registers the tower and its image processor with transformers'
Auto classes. The generator backend is :class:`ragmed.generate.vlm.backend.VLMGenerator` (``generator.name:
ragmed-vlm``).
"""
from ragmed.generate.vlm.modeling import RagmedImageProcessor, RagmedTowerConfig, RagmedTowerModel, register

__all__ = ["RagmedImageProcessor", "RagmedTowerConfig", "RagmedTowerModel", "register"]
