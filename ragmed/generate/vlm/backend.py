"""The ``ragmed-vlm`` generator backend: ragmed's own small VLM answers with the image in the prompt.

It is the ``transformers`` backend (ragmed.generate.hf) with the model rebuilt from the shipped parts (or from
``weights:``, a directory written by eval/train_vlm.py) by :func:`ragmed.generate.vlm.build.load_parts`. Closed questions are answered by scoring their choices
(yes/no, or an either/or question's options) with the model; ``closed: auto`` lets the vote over the retrieved
cases answer when it is clear (weighted share ≥ ``vote_share``) and the VLM decide otherwise; ``closed: vote`` is
the vote alone. The prompt is the one the model was trained with (``prompts/default/*.txt`` here: the image, then
the question); the retrieved cases are cited by the grounding step (ragmed.generate.citations).

    generator:
      name: ragmed-vlm
      params: {closed: model, threads: 1}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ragmed.generate.hf import TransformersGenerator, torch_threads

PROMPTS = Path(__file__).resolve().parent / "prompts"


class VLMGenerator(TransformersGenerator):
    """Parameters: ``weights`` (a ragmed-vlm weights directory; default: the shipped one), ``cache`` (where the
    merged checkpoint is kept; default ragmed's cache), ``threads`` (1), ``closed`` (``model``), and those of
    :class:`ragmed.generate.chat.ChatGenerator`."""

    id = "ragmed-vlm"

    def __init__(self, weights: str | None = None, *, cache: str | None = None, threads: int | None = 1,
                 closed: str = "model", prompts_dir: str | None = None, image_max_side: int = 512, **kw: Any):
        kw.setdefault("kind", "vlm")
        super().__init__(None, threads=threads, closed=closed, prompts_dir=prompts_dir or str(PROMPTS),
                         image_max_side=image_max_side, **kw)
        self.weights = weights
        self.cache = cache

    @property
    def model_id(self) -> str:
        return (f"ragmed-vlm:{self.name or (Path(self.weights).name if self.weights else 'ragmed-vlm')}"
                + self.adapter_suffix)

    def _load(self) -> None:
        """Rebuilt from the parts (SmolLM2 from its package + tower + merged adapter: a few seconds, nothing
        written but the cached SmolLM2 conversion). :func:`ragmed.generate.vlm.build.materialise` writes the same
        model as a plain checkpoint for the ``transformers`` backend, PEFT or TRL."""
        from ragmed.generate.vlm.build import load_parts, shipped_path

        with torch_threads(self.threads):
            self.model, self.processor = load_parts(self.weights or shipped_path(), cache=self.cache)
        self.tokenizer = self.processor.tokenizer
        self.is_vlm = True
        self.path = str(self.weights or shipped_path())
        if self.adapter:  # an alignment adapter (ragmed align train), refused for another base model
            from ragmed.generate.adapter import attach_adapter

            base_id = self.model_id.removesuffix(self.adapter_suffix)
            self.model = attach_adapter(self.model, self.adapter, model_id=base_id)
        self.model.to(self.device).eval()


__all__ = ["VLMGenerator", "PROMPTS"]
