"""Align the generator to the evidence (MMed-RAG's RAG-based preference fine-tuning, RAG-PT; MMedPO weights).

- :mod:`ragmed.align.pairs`: preference pairs from training questions (cross-modality, helpful and harmful
  retrieval, MMedPO-style hallucinations) — ``ragmed align pairs``;
- :mod:`ragmed.align.hallucinate`: dispreferred answers and their clinical-relevance weights;
- :mod:`ragmed.align.train`: DPO with LoRA (TRL ``DPOTrainer`` subclass: per-pair weights, an image per side),
  checkpoints, ``--resume``, curves, run card — ``ragmed align train``;
- :mod:`ragmed.align.evaluate`: accuracy with / without retrieval, over-reliance, helpfulness and copy rate, before
  vs after, bootstrap intervals over images — ``ragmed align eval`` / ``ragmed eval align``.

The trained adapter loads into any pipeline by path: ``generator.params.adapter: DIR``.
Heavy imports (torch, trl, peft) happen inside the functions.
"""
from __future__ import annotations

__all__ = ["build_pairs", "read_pairs", "train_dpo", "evaluate_alignment"]


def __getattr__(name):
    if name in ("build_pairs", "read_pairs"):
        from ragmed.align import pairs

        return getattr(pairs, name)
    if name == "train_dpo":
        from ragmed.align.train import train_dpo

        return train_dpo
    if name == "evaluate_alignment":
        from ragmed.align.evaluate import evaluate_alignment

        return evaluate_alignment
    raise AttributeError(name)
