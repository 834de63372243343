"""Evaluation: retrieval, VQA and report-generation metrics with one stable result format (``"schema": 1``).

``ragmed eval retrieval|vqa|report`` (``ragmed/cli/eval.py``) calls :func:`evaluate_retrieval`,
:func:`evaluate_vqa` and :func:`evaluate_reports`; the metric functions are pure and tested on hand-computed values.
Speed benchmarks live in ``eval/bench_*.py`` (helpers in :mod:`ragmed.eval.bench`). Nothing here imports torch or
faiss at import time.
"""
from __future__ import annotations

from ragmed.eval.normalize import answer_tokens, normalize_answer
from ragmed.eval.report import bleu_scores, evaluate_reports, finding_scores, rouge_l
from ragmed.eval.results import SCHEMA, make_result, validate_result, write_json
from ragmed.eval.retrieval import TASKS, evaluate_retrieval, is_relevant, parse_ks, ranking_metrics, values_match
from ragmed.eval.vqa import evaluate_vqa, item_metrics, short_answer, token_scores

__all__ = ["SCHEMA", "TASKS", "answer_tokens", "normalize_answer", "bleu_scores", "rouge_l", "finding_scores",
           "evaluate_reports", "make_result", "validate_result", "evaluate_retrieval", "is_relevant",
           "ranking_metrics", "values_match", "evaluate_vqa", "item_metrics", "short_answer", "token_scores", "write_json", "parse_ks", "plots_for"]


def __getattr__(name: str):
    if name == "plots_for":  # needs matplotlib (the eval extra): imported on use
        from ragmed.eval.plots import plots_for

        return plots_for
    raise AttributeError(f"module 'ragmed.eval' has no attribute {name!r}")
