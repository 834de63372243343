"""VQA metrics and the evaluator behind ``ragmed eval vqa``.

Closed questions (``answer_type`` "closed", trimmed and case-folded): accuracy = exact match of the normalised
short answer against the normalised gold answer. Open questions: recall = share of the gold answer's tokens found in
the short answer (multiset), and token F1 (SQuAD style). Normalisation: :func:`ragmed.eval.normalize.answer_tokens`.

The short answer of an :class:`ragmed.types.Answer` comes from :func:`short_answer`.

Risk–coverage (closed questions): every closed answer gets its evidence level
(:func:`ragmed.generate.vote.evidence_level`); an answer the pipeline withheld as "insufficient evidence" keeps the
answer it would have given (its ``withheld:`` flag). Ranked by level, the accuracy of the best-supported 100 / 80 /
50 % (:func:`risk_coverage`) shows what abstention buys; ``closed_coverage`` and ``closed_selective_accuracy`` are the
share answered and their accuracy at the pipeline's own threshold.
"""
from __future__ import annotations

import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ragmed.eval.normalize import answer_tokens, normalize_answer

_CITE = re.compile(r"\s*\[(?:K?\d+)\]")
_INSUFFICIENT = ("insufficient evidence", "the retrieved evidence contains no text", "none of the retrieved evidence")


def short_answer(answer: Any) -> str:
    """The short answer to score.

    1. ``answer.short_answer`` (or ``answer["short_answer"]``) when a generator sets it;
    2. else the first line of the answer text, cut at the first citation mark, " — ", or sentence end
       (the extractive answerer writes ``"<answer> [1] — the answer given for the most similar indexed question …"``;
       a model generator asked a closed question answers ``"Yes [1]. …"``);
    3. an answer that declares insufficient evidence scores as the empty answer.
    """
    if isinstance(answer, dict):
        short = answer.get("short_answer")
        text = answer.get("answer") or answer.get("text") or ""
    else:
        short = getattr(answer, "short_answer", None)
        text = getattr(answer, "text", answer if isinstance(answer, str) else "")
    if short:
        return str(short).strip()
    text = str(text or "").strip()
    if not text or text.casefold().startswith(_INSUFFICIENT) or getattr(answer, "insufficient_evidence", False):
        return ""
    line = text.splitlines()[0]
    m = _CITE.search(line)
    if m:
        line = line[:m.start()]
    line = line.split(" — ")[0]
    line = re.split(r"(?<=[a-z0-9)])[.;!?](?:\s|$)", line, maxsplit=1)[0]
    return line.strip().strip(".,;: ")


def closed_correct(prediction: str, gold: str) -> bool:
    g = normalize_answer(gold)
    return bool(g) and normalize_answer(prediction) == g


def token_scores(prediction: str, gold: str) -> dict[str, float]:
    """Multiset token overlap: recall (gold tokens found), precision and F1."""
    p, g = answer_tokens(prediction), answer_tokens(gold)
    if not g:
        raise ValueError("gold answer is empty after normalisation")
    common = sum((Counter(p) & Counter(g)).values())
    recall = common / len(g)
    precision = common / len(p) if p else 0.0
    f1 = 0.0 if common == 0 else 2 * precision * recall / (precision + recall)
    return {"recall": recall, "precision": precision, "f1": f1}


def item_metrics(prediction: str, gold: str, answer_type: str) -> dict[str, float]:
    """Per-item metrics: closed → ``closed_accuracy``; open → ``open_recall``, ``open_f1``; every item → ``accuracy``
    (exact match after normalisation, whatever the type)."""
    at = (answer_type or "").strip().casefold()
    exact = 1.0 if closed_correct(prediction, gold) else 0.0
    out = {"accuracy": exact}
    if at == "closed":
        out["closed_accuracy"] = exact
    else:
        s = token_scores(prediction, gold)
        out["open_recall"] = s["recall"]
        out["open_f1"] = s["f1"]
    return out


def risk_coverage(rows: list[dict[str, Any]], *, threshold: float | None = None,
                  coverages: tuple[float, ...] = (1.0, 0.8, 0.5)) -> dict[str, Any]:
    """Accuracy against coverage for rows ``{"level", "correct", "abstained"}`` (closed questions with gold answers).

    ``at``: accuracy of the ``c`` share of rows with the highest evidence level, for each coverage ``c``;
    ``curve``: the same in 5 % steps; ``at_threshold``: coverage and accuracy of the rows answered (level ≥
    ``threshold``, else the rows not abstained)."""
    n = len(rows)
    if not n:
        return {"n": 0, "at": {}, "curve": [], "at_threshold": {"coverage": 0.0, "accuracy": None}}
    ranked = sorted(rows, key=lambda r: -float(r["level"]))  # stable: ties keep question order

    def acc(m: int) -> float:
        m = max(1, m)
        return round(sum(bool(r["correct"]) for r in ranked[:m]) / m, 4)

    answered = [r for r in rows if (float(r["level"]) >= threshold if threshold is not None else not r.get("abstained"))]
    return {"n": n,
            "at": {f"{int(round(c * 100))}%": acc(int(round(c * n))) for c in coverages},
            "curve": [{"coverage": round(c / 20, 2), "accuracy": acc(int(round(c / 20 * n)))} for c in range(1, 21)],
            "at_threshold": {"threshold": threshold, "coverage": round(len(answered) / n, 4),
                             "accuracy": round(sum(bool(r["correct"]) for r in answered) / len(answered), 4)
                             if answered else None}}


def select_items(items: list, limit: int | None, seed: int) -> list:
    """A seeded random subset of ``limit`` items (all of them, in file order, without ``limit``)."""
    if not limit or limit >= len(items):
        return list(items)
    rng = random.Random(seed)
    idx = sorted(rng.sample(range(len(items)), limit))
    return [items[i] for i in idx]


def evaluate_vqa(pipeline_path: str | Path | None, index: str | Path, data: str | Path, images: str | Path, *,
                 fmt: str | None = None, limit: int | None = None, seed: int = 0, exclude_query_image: bool = True,
                 items: list | None = None, progress: bool = False,
                 predictions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Ask the pipeline every question (its own image excluded from retrieval by default) and score the answers."""
    from tqdm import tqdm

    from ragmed.version import __version__
    from ragmed.corpus.vqa import read_qa
    from ragmed.errors import RagmedError
    from ragmed.eval.results import make_result
    from ragmed.generate.vote import evidence_level
    from ragmed.io import load_image
    from ragmed.pipeline import Pipeline

    t0 = time.perf_counter()
    p = Pipeline.for_index(index, pipeline_path)
    all_items = items if items is not None else read_qa(data, format=fmt)
    chosen = select_items(all_items, limit, seed)
    images = Path(images)
    per_item, skipped, rc_rows = [], [], []
    groups: dict[str, list] = {"by_question_type": [], "by_organ": [], "by_domain": []}
    models: dict[str, str] = {}
    for it in tqdm(chosen, desc="eval vqa", disable=not progress, unit="q"):
        if not normalize_answer(it.answer):
            skipped.append({"id": it.qid, "reason": "gold answer is empty after normalisation"})
            continue
        path = images / it.image
        try:
            img = load_image(path)
            ans = p.ask(img, it.question, exclude_hashes={img.content_hash} if exclude_query_image else None)
        except RagmedError as e:
            skipped.append({"id": it.qid, "reason": str(e)})
            continue
        models = ans.models or models
        pred = short_answer(ans)
        m = item_metrics(pred, it.answer, it.answer_type)
        per_item.append(m)
        if (it.answer_type or "").strip().casefold() == "closed":
            withheld = next((f.split(":", 1)[1] for f in ans.flags if f.startswith("withheld:")), None)
            full = withheld if withheld is not None else pred
            _, level = evidence_level(it.question, ans.evidence, answer=full or None, text_encoder=p.text_encoder)
            rc_rows.append({"level": level, "correct": bool(full) and closed_correct(full, it.answer),
                            "abstained": bool(ans.insufficient_evidence)})
        domain = ans.domain or (ans.evidence[0].domain if ans.evidence else None)
        groups["by_question_type"].append(it.question_type or None)
        groups["by_organ"].append(it.organ or None)
        groups["by_domain"].append(domain)
        if predictions is not None:
            predictions.append({"id": it.qid, "question": it.question, "prediction": pred, "answer_text": ans.text,
                                "gold": it.answer, "answer_type": it.answer_type,
                                "correct": bool(m["accuracy"]), "metrics": m,
                                "evidence_ids": [e.case_id for e in ans.evidence],
                                "insufficient_evidence": ans.insufficient_evidence})
    store = p.store
    config = {"data": str(data), "images": str(images), "format": fmt, "limit": limit, "seed": seed,
              "exclude_query_image": exclude_query_image, "n_items_in_file": len(all_items),
              "pipeline": {"name": p.config.name, "source": p.config.source,
                           "retrieval": p.config.retrieval.model_dump(), "select": p.config.select.model_dump()},
              "encoders": {k: v.get("id") for k, v in store.encoders.items()},
              "generator": {"name": p.config.generator.name, "model": models.get("generator")},
              "index": {"path": str(index), "version": store.version_dir.name, "factory": store.manifest.get("factory"),
                        "n_cases": store.count("cases")},
              "ragmed_version": __version__}
    rc = risk_coverage(rc_rows)
    extra = {}
    if rc_rows:
        extra = {"closed_coverage": rc["at_threshold"]["coverage"],
                 "closed_selective_accuracy": rc["at_threshold"]["accuracy"] or 0.0,
                 **{f"closed_accuracy_at_{k[:-1]}_coverage": v for k, v in rc["at"].items()}}
    res = make_result("vqa", per_item, groups, skipped, config, time.perf_counter() - t0, extra_metrics=extra)
    res["risk_coverage"] = rc
    return res
