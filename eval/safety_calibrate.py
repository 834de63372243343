"""Calibrate the evidence level below which a closed answer says "insufficient evidence" (issue 12, item 4), and
measure risk–coverage.

    python eval/safety_calibrate.py calibrate --index IDX --data SPLIT/index.json --images ../shared/data/vqa-rad/images
    python eval/safety_calibrate.py evaluate  --index IDX --data SPLIT/eval.json  --images ../shared/data/vqa-rad/images

``calibrate`` asks every closed question of the *index half* with its own image excluded from retrieval
(leave-one-image-out: ``exclude_hashes``), records the vote's answer and :func:`ragmed.generate.vote.evidence_level`,
and picks the threshold: the lowest level at which the answers at or above it reach ``--target`` accuracy on the
calibration questions (default 0.70, the closed accuracy MedGemma 4B reports on VQA-RAD), keeping at least
``--min-coverage`` of the answers the evidence gives, and never below a net support of 0.001 (a closed answer that no
retrieved case supports, e.g. a model's answer when nothing votes, is withheld). It writes ``ragmed/generate/abstention.json`` (the default threshold the pipeline uses)
and ``eval/results/safety_calibrate.json``. ``evaluate`` runs the *evaluation half* once with that threshold and
reports accuracy at 100 / 80 / 50 % coverage (answers ranked by evidence level) and at the threshold; the evaluation
half never sets a threshold. The answerer is the default pipeline's closed strategy, the vote over the image-matched
cases (``--before`` runs the code of the commit named by ``--before-src``: the pre-issue behaviour).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(index: str, data: str, images: str, limit: int | None = None) -> list[dict]:
    from ragmed.corpus.vqa import read_qa
    from ragmed.errors import RagmedError
    from ragmed.eval.vqa import closed_correct, select_items, short_answer
    from ragmed.generate.vote import VoteGenerator
    try:
        from ragmed.generate.vote import evidence_level
    except ImportError:  # the pre-issue code (--label before): no evidence level, every answer at level 0
        def evidence_level(*_a, **_k):
            return None, 0.0
    from ragmed.io import load_image
    from ragmed.pipeline import Pipeline

    p = Pipeline.for_index(index)
    p.config.knowledge.max_concepts = 0  # the closed vote does not read knowledge; skip loading the graph
    p._generator = VoteGenerator(text_encoder=p.text_encoder)
    items = [it for it in read_qa(data) if (it.answer_type or "").lower() == "closed"]
    items = select_items(items, limit, 0)
    rows = []
    t0 = time.perf_counter()
    for i, it in enumerate(items):
        if i % 50 == 0:
            print(f"{i}/{len(items)} {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
        try:
            img = load_image(Path(images) / it.image)
            a = p.ask(img, it.question, exclude_hashes={img.content_hash}, task="closed")
        except RagmedError as e:
            rows.append({"id": it.qid, "error": str(e)})
            continue
        withheld = next((f.split(":", 1)[1] for f in a.flags if f.startswith("withheld:")), None)
        pred = withheld if withheld is not None else short_answer(a)
        ans, level = evidence_level(it.question, a.evidence, answer=pred or None, text_encoder=p.text_encoder)
        rows.append({"id": it.qid, "question": it.question, "gold": it.answer, "prediction": pred,
                     "abstained": a.insufficient_evidence, "level": round(level, 4),
                     "correct": bool(pred) and closed_correct(pred, it.answer)})
    return rows


MIN_SUPPORT = 1e-3  # an answer needs some net support from the evidence: level 0 (nothing votes) is never enough


def choose_threshold(rows: list[dict], target: float, min_coverage: float) -> float:
    """The lowest evidence level at which the answers at or above it reach ``target`` accuracy, keeping at least
    ``min_coverage`` of the answers the evidence gives (a question nothing votes on has no evidence answer); when the
    target is out of reach, the level that keeps ``min_coverage``. Never below :data:`MIN_SUPPORT`."""
    answered = [r for r in rows if r["prediction"]]
    if not answered:
        return MIN_SUPPORT
    for t in sorted({r["level"] for r in answered}):
        sel = [r for r in answered if r["level"] >= t]
        if len(sel) / len(answered) < min_coverage:
            break
        if sum(r["correct"] for r in sel) / len(sel) >= target:
            return max(t, MIN_SUPPORT)
    ranked = sorted((r["level"] for r in answered), reverse=True)
    return max(ranked[max(0, int(min_coverage * len(answered)) - 1)], MIN_SUPPORT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["calibrate", "evaluate"])
    ap.add_argument("--index", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--target", type=float, default=0.70)
    ap.add_argument("--min-coverage", type=float, default=0.5)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--label", default="after")
    ap.add_argument("--from-items", default=None, help="re-use the items of an earlier run's result (no asking)")
    a = ap.parse_args()
    try:
        from ragmed.eval.vqa import risk_coverage
    except ImportError:  # the pre-issue code: coverage 100 % only
        def risk_coverage(rows, threshold=None):
            acc = round(sum(bool(r["correct"]) for r in rows) / max(1, len(rows)), 4)
            return {"n": len(rows), "at": {"100%": acc}, "at_threshold": {"threshold": None, "coverage": 1.0,
                                                                          "accuracy": acc}}

    t0 = time.perf_counter()
    rows = (json.loads(Path(a.from_items).read_text())["items"] if a.from_items
            else run(a.index, a.data, a.images, a.limit))
    ok = [r for r in rows if "error" not in r]
    cmd = "python eval/safety_calibrate.py " + " ".join(sys.argv[1:])
    cmd = cmd.replace(str(REPO.parent), "..")
    res = {"task": f"safety_{a.mode}", "label": a.label, "command": cmd, "n": len(ok),
           "n_errors": len(rows) - len(ok), "seconds": round(time.perf_counter() - t0, 1)}
    if a.mode == "calibrate":
        chosen = choose_threshold(ok, a.target, a.min_coverage)
        res.update({"target_accuracy": a.target, "min_coverage": a.min_coverage, "min_level": chosen,
                    "calibration": risk_coverage(ok, threshold=chosen)})
        (REPO / "ragmed" / "generate" / "abstention.json").write_text(json.dumps(
            {"min_level": chosen, "target_accuracy": a.target, "min_coverage": a.min_coverage,
             "coverage_on_calibration": res["calibration"]["at_threshold"]["coverage"],
             "accuracy_on_calibration": res["calibration"]["at_threshold"]["accuracy"],
             "calibrated_on": "VQA-RAD train.json split by image (ragmed.eval.split, seed 0, 80 %): the index half, "
                              "leave-one-image-out", "command": cmd}, indent=1) + "\n")
    else:  # the threshold calibrated on the index half (read at the end: the evaluation half never sets it)
        f = REPO / "ragmed" / "generate" / "abstention.json"
        res["min_level"] = json.loads(f.read_text())["min_level"] if f.exists() else None
        res["risk_coverage"] = risk_coverage(ok, threshold=res["min_level"])
    res["items"] = ok
    out = Path(a.out or REPO / "eval" / "results" / f"safety_{a.mode}.json")
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "items"}, indent=1))


if __name__ == "__main__":
    main()
