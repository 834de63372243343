"""Align the generator to the evidence (MMed-RAG's RAG-based preference fine-tuning, RAG-PT; MMedPO weights).

- :mod:`ragmed.align.pairs`: preference pairs from training questions (cross-modality, helpful and harmful
  retrieval, MMedPO-style hallucinations) — ``ragmed align pairs``;
- :mod:`ragmed.align.hallucinate`: dispreferred answers and their clinical-relevance weights;
- :mod:`ragmed.align.train`: DPO with LoRA (TRL ``DPOTrainer`` subclass: per-pair weights, an image per side),
  checkpoints, ``--resume``, curves, run card — ``ragmed align train``;
- :mod:`ragmed.align.memo`: each text's vector encoded once (the answer step's evidence vote), for cheaper
  pair building and evaluation;
- :mod:`ragmed.align.evaluate`: accuracy with / without retrieval, over-reliance, helpfulness and copy rate, before
  vs after, bootstrap intervals over images — ``ragmed align eval`` / ``ragmed eval align``.

The trained adapter loads into any pipeline by path: ``generator.params.adapter: DIR``.
Heavy imports (torch, trl, peft) happen inside the functions.
"""
from __future__ import annotations

_NAMES = {
    "build_pairs": "pairs", "read_pairs": "pairs", "PairOptions": "pairs", "balance_pairs": "pairs",
    "train_dpo": "train", "TrainOptions": "train",
    "evaluate_alignment": "evaluate", "EvalOptions": "evaluate", "table": "evaluate",
    "pipeline_variant": "config", "memo_pipeline": "memo", "MemoTextEncoder": "memo",
}
__all__ = sorted(_NAMES)


def __getattr__(name):
    sub = _NAMES.get(name)
    if sub is None:
        raise AttributeError(f"module 'ragmed.align' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"ragmed.align.{sub}"), name)
