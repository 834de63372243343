"""VQA-RAD: does retrieval help, and how much evidence should the generator get?

    python eval/vqa_selection.py [--generators extractive,vote,gguf] [--limit-slow 40]

One run, one table: on VQA-RAD ``train.json`` split by image (seed 0) into an index part (80% of the images) and an
evaluation part (no evaluation image is indexed), for each generator backend that runs here, accuracy on closed
questions and recall / token F1 on open questions of

  (a) ``none``      no retrieval (the generator gets no evidence);
  (b) ``fixed-k``   the fixed top-k (k = --k);
  (c) ``gap``       MMed-RAG's gap rule on the calibrated similarity (γ = --gamma, min_k 1, max_k --max-k), with its
                    fire rate and mean k, and ``fixed-mean-k``: fixed k at the gap rule's (rounded) mean k;
  (d) ``rule``      RULE's Learn-then-Test k, calibrated on a slice of the index part (--cal-fraction of the index
                    images, each calibration question retrieving with its own case excluded), α = --alpha,
                    δ = --delta, Bonferroni over k ∈ --ks (--slow-ks for slow backends); the stored per-k risks
                    are re-tested at α = 0.4 / 0.5 / 0.6 too (``ltt_at_other_alpha``);

against the majority-answer baseline (the most frequent closed / open answer of the index part). n per cell is
reported; slow backends (gguf, transformers) run on the first --limit-slow questions of each type (seeded order).
Retrieval runs once per question and is shared by every strategy and backend. Results:
``eval/results/vqa_selection.json``; calibrations: ``<work>/index/select/ltt-<generator>.json``.
"""
from __future__ import annotations

import argparse
import inspect
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SLOW = {"gguf", "transformers", "openai"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/vqa-rad/train.json"))
    ap.add_argument("--images", default=None, help="default: images/ beside --data")
    ap.add_argument("--work", default="/tmp/ragmed-vqa-selection")
    ap.add_argument("--pipeline", default="default")
    ap.add_argument("--channels", default="image-image,image-report,question-report,bm25")
    ap.add_argument("--fusion", default="rrf", choices=["rrf", "score"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--generators", default=None, help="comma list; default: extractive, vote, gguf when available")
    ap.add_argument("--limit-slow", type=int, default=40)
    ap.add_argument("--limit", type=int, default=0, help="questions per type for every backend (0 = all)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--max-k", type=int, default=5)
    ap.add_argument("--gamma", type=float, default=0.1)
    ap.add_argument("--ks", default="1,2,3,5,8,10")
    ap.add_argument("--slow-ks", default="1,3,5,10", help="candidate k for slow backends' calibration")
    ap.add_argument("--alpha", type=float, default=0.55)
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--cal-fraction", type=float, default=0.2)
    ap.add_argument("--out", default=str(REPO / "eval/results/vqa_selection.json"))
    a = ap.parse_args(argv)

    from ragmed.config import load_pipeline
    from ragmed.corpus.vqa import read_qa, read_vqa
    from ragmed.eval.normalize import normalize_answer
    from ragmed.eval.split import split_by_image
    from ragmed.eval.vqa import item_metrics, short_answer
    from ragmed.generate import create_generator, list_generators
    from ragmed.pipeline import Pipeline
    from ragmed.pipeline.build import build_from_config
    from ragmed.select import FixedK, GapSelector
    from ragmed.select.ltt import LTTSelector, calibrate_k, retest, save_calibration

    t_start = time.time()
    data = Path(a.data)
    images = Path(a.images) if a.images else data.parent / "images"
    work = Path(a.work)
    split = split_by_image(data, work / "split", seed=a.seed, index_fraction=0.8)
    cfg = load_pipeline(a.pipeline)
    cfg.retrieval.channels = a.channels.split(",")
    cfg.retrieval.fusion = a.fusion
    cfg.retrieval.top_k = max(10, max(int(k) for k in a.ks.split(",")))
    index_dir = work / "index"
    corpus = read_vqa(work / "split/index.json", images)
    stamp = work / "index.key"
    key = json.dumps([corpus.checksum(), cfg.to_dict()], sort_keys=True)
    if not (stamp.exists() and stamp.read_text() == key and (index_dir / "current").exists()):
        print(f"building the index from {len(corpus.cases)} images …", file=sys.stderr)
        build_from_config(corpus, index_dir, cfg, progress=False)
        stamp.write_text(key)
    pipe = Pipeline(cfg, index=index_dir)
    pipe.warm_up()

    index_qa = read_qa(work / "split/index.json")
    eval_qa = read_qa(work / "split/eval.json")
    rng = random.Random(a.seed)
    index_images = sorted({q.image for q in index_qa})
    cal_images = set(rng.sample(index_images, int(round(a.cal_fraction * len(index_images)))))
    cal_qa = [q for q in index_qa if q.image in cal_images and q.answer_type == "closed"]
    rng.shuffle(cal_qa)
    eval_qa = [q for q in eval_qa if q.answer_type in ("closed", "open") and normalize_answer(q.answer)]
    rng.shuffle(eval_qa)

    def case_id(image: str) -> str:
        return Path(image).with_suffix("").as_posix().replace("/", "_")

    # majority baseline
    maj = {}
    for t in ("closed", "open"):
        c = Counter(normalize_answer(q.answer) for q in index_qa if q.answer_type == t)
        maj[t] = c.most_common(1)[0][0]
    baseline = _cell([item_metrics(maj[q.answer_type], q.answer, q.answer_type) for q in eval_qa], [])

    # retrieval, once per question
    t0 = time.time()
    retr_eval, retr_cal = {}, {}
    for q in eval_qa:
        retr_eval[q.qid] = _light(pipe.retrieve(images / q.image, q.question))
    for q in cal_qa:
        retr_cal[q.qid] = _light(pipe.retrieve(images / q.image, q.question, exclude_case_ids={case_id(q.image)}))
    t_retrieval = time.time() - t0

    names = a.generators.split(",") if a.generators else [g for g in ("extractive", "vote", "gguf")
                                                           if g in list_generators()]
    ks = [int(k) for k in a.ks.split(",")]
    gap = GapSelector(gamma=a.gamma, min_k=1, max_k=a.max_k)
    gap_score = GapSelector(gamma=a.gamma, min_k=1, max_k=a.max_k, by="score")
    gap_name = "gap-on-rrf-score" if a.fusion == "rrf" else "gap-on-fused-score"  # by="score": Evidence.score
    results, calibrations, errors = {}, {}, {}
    for name in names:
        try:
            gen = _make_generator(create_generator, name, pipe)
            gen.warm_up()
        except Exception as e:  # a backend that cannot run here is reported, not fatal
            errors[name] = f"{type(e).__name__}: {e}"
            print(f"[{name}] skipped: {errors[name]}", file=sys.stderr)
            continue
        limit = a.limit or (a.limit_slow if name in SLOW else 0)
        evq = _limit(eval_qa, limit)
        calq = cal_qa[:limit] if limit else cal_qa
        tg = time.time()

        memo: dict[tuple, tuple] = {}  # generation is deterministic: the same question and evidence, same answer

        def run(q, r, selector):
            task = q.answer_type
            if selector is None:
                g = gen.generate(q.question, [], [], image=r.image, domain=r.domain, task=task)
                return item_metrics(short_answer(g.text if not g.insufficient else ""), q.answer, q.answer_type), 0
            kept = tuple(e.case_id for e in selector.select(list(r.candidates)).kept)
            key = (q.qid, id(r), kept)
            if key not in memo:
                ans = pipe.answer(r, q.question, task=task, selector=selector, generator=gen)
                memo[key] = (short_answer(ans), len(ans.evidence))
            short, n_kept = memo[key]
            return item_metrics(short, q.answer, q.answer_type), n_kept

        # (d) calibration of k on the calibration slice
        gks = [int(k) for k in a.slow_ks.split(",")] if name in SLOW and a.slow_ks else ks
        correct = []
        for q in calq:
            correct.append([run(q, retr_cal[q.qid], FixedK(k))[0]["closed_accuracy"] for k in gks])
        cal = calibrate_k(correct, gks, alpha=a.alpha, delta=a.delta, method="bonferroni",
                          meta={"generator": name, "split": f"VQA-RAD train.json seed {a.seed}: closed questions of "
                                f"{len(cal_images)} index-part images, own case excluded"})
        save_calibration(cal, index_dir / "select" / f"ltt-{name}.json")
        calibrations[name] = cal
        cal["ltt_at_other_alpha"] = {str(al): {"k": rt["k"], "certified": rt["certified"],
                                               "accepted": [c["k"] for c in rt["candidates"] if c["accepted"]]}
                                     for al in (0.4, 0.5, 0.6) for rt in [retest(cal, alpha=al)]}
        ltt = LTTSelector(calibration=f"ltt-{name}", search_dirs=[index_dir])
        cells: dict[str, dict] = {}
        per: dict[str, list] = {s: [] for s in ("none", "fixed-k", "gap", gap_name, "rule")}
        kept: dict[str, list] = {s: [] for s in per}
        fired = {"gap": 0, gap_name: 0}
        for q in evq:
            r = retr_eval[q.qid]
            for s, sel in (("none", None), ("fixed-k", FixedK(a.k)), ("gap", gap), (gap_name, gap_score),
                           ("rule", ltt)):
                m, n_kept = run(q, r, sel)
                per[s].append(m)
                kept[s].append(n_kept)
            fired["gap"] += gap.select(list(r.candidates)).cut_at is not None
            fired[gap_name] += gap_score.select(list(r.candidates)).cut_at is not None
        mean_gap_k = sum(kept["gap"]) / max(1, len(kept["gap"]))
        k_same = max(1, round(mean_gap_k))
        per["fixed-mean-k"], kept["fixed-mean-k"] = [], []
        for q in evq:
            m, n_kept = run(q, retr_eval[q.qid], FixedK(k_same))
            per["fixed-mean-k"].append(m)
            kept["fixed-mean-k"].append(n_kept)
        for s in per:
            cells[s] = _cell(per[s], kept[s])
        for s in fired:
            cells[s]["fire_rate"] = round(fired[s] / max(1, len(evq)), 4)
        cells["fixed-k"]["k"] = a.k
        cells["fixed-mean-k"]["k"] = k_same
        cells["rule"]["k"] = cal["k"]
        results[name] = {"cells": cells, "n_questions": len(evq), "n_calibration": len(calq),
                         "seconds": round(time.time() - tg, 1), "limit": limit or None}
        print(f"[{name}] done in {time.time() - tg:.0f}s", file=sys.stderr)

    out = {
        "task": "vqa-rad closed/open: retrieval and context selection",
        "command": "python " + " ".join([sys.argv[0]] + sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": {"source": "VQA-RAD train.json", "seed": a.seed, "index_images": len(split["index_images"]),
                 "eval_images": len(split["eval_images"]), "eval_questions": len(eval_qa),
                 "eval_closed": sum(q.answer_type == "closed" for q in eval_qa),
                 "eval_open": sum(q.answer_type == "open" for q in eval_qa),
                 "calibration_images": len(cal_images), "calibration_closed_questions": len(cal_qa)},
        "pipeline": {"name": cfg.name, "image_encoder": pipe.image_encoder.id if pipe.image_encoder else None,
                     "text_encoder": pipe.text_encoder.id, "channels": cfg.retrieval.channels,
                     "fusion": cfg.retrieval.fusion, "top_k": cfg.retrieval.top_k},
        "params": {"k": a.k, "gamma": a.gamma, "max_k": a.max_k, "ks": ks, "alpha": a.alpha, "delta": a.delta,
                   "gap_scores": "calibrated similarity (Evidence.similarity); gap-on-rrf-score: the RRF score"},
        "majority_baseline": {"closed_answer": maj["closed"], "open_answer": maj["open"], **baseline},
        "results": results,
        "calibrations": calibrations,
        "skipped_generators": errors,
        "retrieval_seconds": round(t_retrieval, 1),
        "seconds": round(time.time() - t_start, 1),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(_table(out))
    return 0


def _make_generator(create_generator, name, pipe):
    from ragmed.generate import _GENERATORS  # the factory, to see which parameters it takes

    f = _GENERATORS[name]
    if isinstance(f, str):
        import importlib

        mod, attr = f.split(":")
        f = getattr(importlib.import_module(mod), attr)
    params = {}
    try:
        if "text_encoder" in inspect.signature(f).parameters:
            params["text_encoder"] = CachedTextEncoder(pipe.text_encoder)
    except (TypeError, ValueError):
        pass
    return create_generator(name, **params)


class CachedTextEncoder:
    """The pipeline's text encoder with a memo per sentence: every strategy re-reads the same evidence sentences, so
    the answerers that embed them (extractive, vote) embed each once. Same id / dim / space, same vectors."""

    def __init__(self, enc):
        self.enc, self.id, self.dim, self.space = enc, enc.id, enc.dim, enc.space
        self.memo: dict[str, object] = {}

    def encode_texts(self, texts):
        import numpy as np

        missing = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if missing:
            for t, v in zip(missing, self.enc.encode_texts(missing)):
                self.memo[t] = v
        return np.stack([self.memo[t] for t in texts]) if texts else self.enc.encode_texts([])


def _light(r):
    """Keep the retrieval, drop the decoded pixels (hundreds of full-size images would not fit in memory); the
    text-only backends measured here do not read them."""
    r.image = None
    return r


def _limit(qa, limit):
    if not limit:
        return qa
    closed = [q for q in qa if q.answer_type == "closed"][:limit]
    opened = [q for q in qa if q.answer_type == "open"][:limit]
    return closed + opened


def _cell(items, kept) -> dict:
    closed = [m["closed_accuracy"] for m in items if "closed_accuracy" in m]
    rec = [m["open_recall"] for m in items if "open_recall" in m]
    f1 = [m["open_f1"] for m in items if "open_f1" in m]
    out = {"closed_accuracy": round(sum(closed) / len(closed), 4) if closed else None, "n_closed": len(closed),
           "open_recall": round(sum(rec) / len(rec), 4) if rec else None,
           "open_f1": round(sum(f1) / len(f1), 4) if f1 else None, "n_open": len(rec)}
    if kept:
        out["mean_k"] = round(sum(kept) / len(kept), 3)
    return out


def _table(out) -> str:
    lines = ["| generator | strategy | closed acc | n | open recall | open F1 | n | mean k | fire rate |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    b = out["majority_baseline"]
    lines.append(f"| (majority answer) | — | {b['closed_accuracy']} | {b['n_closed']} | {b['open_recall']} | "
                 f"{b['open_f1']} | {b['n_open']} | — | — |")
    for g, res in out["results"].items():
        for s, c in res["cells"].items():
            lines.append(f"| {g} | {s}{' (k=' + str(c['k']) + ')' if 'k' in c else ''} | {c['closed_accuracy']} | "
                         f"{c['n_closed']} | {c['open_recall']} | {c['open_f1']} | {c['n_open']} | "
                         f"{c.get('mean_k', '—')} | {c.get('fire_rate', '—')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
