"""RAG-PT preference pairs (MMed-RAG) and MMedPO-style hallucination pairs from training questions.

For each training question with a ground-truth answer, the pipeline answers it three ways, the question's own image
excluded from retrieval:

- ``rag``: with retrieval (``Pipeline.retrieve`` + ``Pipeline.answer``: selection, knowledge, the generator);
- ``no_rag``: the generator alone (``generator.generate(question, [], [], image=...)``);
- ``noise``: with the same retrieved context but the image replaced by Gaussian noise of the same size (or, with
  ``replace="unrelated"``, another training image of a different organ) — only for a generator that takes the image:
  a text-only model sees identical inputs on both sides.

and pairs are kept where they say something (correct = the evaluation's own normaliser: closed exact match; open
token F1 ≥ ``f1_threshold``, default 0.5):

=================  ==========================================  ===================  ==========================
kind               when                                        chosen               rejected
=================  ==========================================  ===================  ==========================
cross-modality     the noise-image answer is correct           ground truth, real   that answer, noise image
                   (it read the text, not the image)           image
helpful            wrong without retrieval, right with it      the rag answer       the no-rag answer
harmful            right without retrieval, wrong with it      ground truth         the rag answer
hallucination      a plausible wrong answer exists             ground truth         it (:mod:`.hallucinate`),
                   (:mod:`ragmed.align.hallucinate`)                                weighted by relevance
=================  ==========================================  ===================  ==========================

Every pair's prompt is the retrieval prompt the generator itself builds (``messages_for``), stored as chat messages
without the image (the trainer puts the image back for a VLM). A pair file is JSONL; beside it
``<name>.meta.json`` records the pipeline, index, model ids, seeds, options and counts per kind.
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
KINDS = ("cross-modality", "helpful", "harmful", "hallucination")
DEFAULT_F1 = 0.5


@dataclass
class PairOptions:
    limit: int | None = None
    seed: int = 0
    f1_threshold: float = DEFAULT_F1
    replace: str = "noise"  # noise | unrelated
    hallucinations: bool = True
    fmt: str | None = None
    resume: bool = True
    max_new: int | None = None  # answer at most this many new questions in this run (0: only finalise the file)
    extra: dict[str, Any] = field(default_factory=dict)


def is_correct(prediction: str, gold: str, answer_type: str, f1_threshold: float = DEFAULT_F1) -> bool:
    """The evaluation's notion of a right answer: closed → exact match after normalisation; open → token F1 ≥
    ``f1_threshold``."""
    from ragmed.eval.vqa import closed_correct, token_scores

    if (answer_type or "").strip().lower() == "closed":
        return closed_correct(prediction, gold)
    try:
        return token_scores(prediction, gold)["f1"] >= f1_threshold
    except ValueError:
        return False


def noise_image(like, seed: int):
    """Gaussian noise (mean 128, sd 64, clipped to 0..255) the size of ``like`` (a MedicalImage / array / PIL), as
    an RGB PIL image; seeded, no global RNG."""
    import numpy as np
    from PIL import Image

    from ragmed.generate.chat import to_pil

    w, h = to_pil(like).size
    rng = np.random.default_rng(seed)
    arr = np.clip(rng.normal(128.0, 64.0, size=(h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def item_seed(seed: int, qid: str) -> int:
    import zlib

    return (int(seed) * 1_000_003 + zlib.crc32(str(qid).encode())) % (2**31)


def _task(answer_type: str) -> str:
    return "closed" if (answer_type or "").strip().lower() == "closed" else "open"


def build_pairs(pipeline, data: str | Path, images: str | Path, out: str | Path, opts: PairOptions | None = None, *,
                progress: bool = False, kg=None) -> dict[str, Any]:
    """Answer each training question with / without retrieval (and with the image replaced, for a VLM) and write
    preference pairs to ``out`` (JSONL, appended to with ``opts.resume``). Returns the meta record (also written to
    ``<out>.meta.json``). ``pipeline``: a :class:`ragmed.pipeline.Pipeline`."""
    from tqdm import tqdm

    from ragmed import __version__
    from ragmed.align.hallucinate import as_answer, hallucinations, normalise_weights
    from ragmed.corpus.vqa import read_qa
    from ragmed.errors import RagmedError
    from ragmed.eval.vqa import select_items, short_answer
    from ragmed.generate.text import options as question_options
    from ragmed.io import load_image

    opts = opts or PairOptions()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    images = Path(images)
    items = read_qa(data, format=opts.fmt)
    chosen = select_items(items, opts.limit, opts.seed)
    gen = pipeline.generator
    gen.warm_up()
    takes_image = bool(getattr(gen, "accepts_images", False))
    done: set[str] = set()
    if opts.resume and out.exists():
        for line in out.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec.get("type") == "question":
                    done.add(rec["qid"])
    elif out.exists():
        out.unlink()
    by_organ: dict[str, list[str]] = {}
    for it in items:
        by_organ.setdefault(it.organ or "", []).append(it.image)
    t0 = time.perf_counter()
    n_new = 0
    skipped: list[dict[str, str]] = []
    with out.open("a", encoding="utf-8") as fh:
        for it in tqdm(chosen, desc="align pairs", unit="q", disable=not progress):
            if it.qid in done:
                continue
            if opts.max_new is not None and n_new >= opts.max_new:
                break
            task = _task(it.answer_type)
            try:
                img = load_image(images / it.image)
                r = pipeline.retrieve(img, it.question, exclude_hashes={img.content_hash})
                ans = pipeline.answer(r, it.question, task=task)
                if ans.insufficient_evidence:
                    raise RagmedError("retrieval found insufficient evidence: no retrieval prompt to align")
                bare = gen.generate(it.question, [], [], image=img, domain=r.domain, task=task)
            except RagmedError as e:
                skipped.append({"qid": it.qid, "reason": str(e)})
                fh.write(json.dumps({"type": "question", "qid": it.qid, "skipped": str(e)}) + "\n")
                n_new += 1
                continue
            s = item_seed(opts.seed, it.qid)
            pred_rag, pred_bare = short_answer(ans), short_answer(bare)
            ok_rag = is_correct(pred_rag, it.answer, it.answer_type, opts.f1_threshold)
            ok_bare = is_correct(pred_bare, it.answer, it.answer_type, opts.f1_threshold)
            prompt = gen.messages_for(it.question, ans.evidence, ans.knowledge, image=None, domain=r.domain, task=task)
            base = {"type": "pair", "qid": it.qid, "image": it.image, "task": task, "answer_type": it.answer_type,
                    "question": it.question, "gold": it.answer, "domain": r.domain, "prompt": prompt,
                    "evidence_ids": [e.case_id for e in ans.evidence],
                    "knowledge_ids": [k.concept_id for k in ans.knowledge if getattr(k, "concept_id", None)],
                    "rejected_image": None, "weight": 1.0, "relevance": None, "detail": ""}
            gold = as_answer(it.answer)
            pairs: list[dict[str, Any]] = []
            q_rec: dict[str, Any] = {"type": "question", "qid": it.qid, "image": it.image, "task": task,
                                     "answer_type": it.answer_type, "gold": it.answer, "rag": pred_rag,
                                     "no_rag": pred_bare, "rag_correct": ok_rag, "no_rag_correct": ok_bare,
                                     "evidence_ids": base["evidence_ids"]}
            if takes_image:
                if opts.replace == "unrelated":
                    pool = [x for o, xs in sorted(by_organ.items()) if o != (it.organ or "") for x in xs]
                    other = pool[s % len(pool)] if pool else None
                    repl = load_image(images / other) if other else None
                    rej_img = {"path": other} if other else None
                else:
                    repl, rej_img = noise_image(img, s), {"noise": s}
                if repl is not None:
                    g_noise = gen.generate(it.question, ans.evidence, ans.knowledge, image=repl, domain=r.domain,
                                           task=task)
                    pred_noise = short_answer(g_noise)
                    q_rec["noise"] = pred_noise
                    q_rec["copy"] = pred_noise.strip().lower() == pred_rag.strip().lower()
                    if is_correct(pred_noise, it.answer, it.answer_type, opts.f1_threshold):
                        pairs.append({**base, "kind": "cross-modality", "subkind": opts.replace, "chosen": gold,
                                      "rejected": as_answer(pred_noise), "rejected_image": rej_img})
            if not ok_bare and ok_rag:
                pairs.append({**base, "kind": "helpful", "subkind": "", "chosen": as_answer(pred_rag),
                              "rejected": as_answer(pred_bare) or "No answer."})
            if ok_bare and not ok_rag:
                pairs.append({**base, "kind": "harmful", "subkind": "", "chosen": gold,
                              "rejected": as_answer(pred_rag) or "No answer."})
            if opts.hallucinations and gold:
                for h in hallucinations(it.question, it.answer, it.answer_type,
                                        options=question_options(it.question), kg=kg):
                    if any(p["chosen"] == gold and p["rejected"] == h.text and p["rejected_image"] is None
                           for p in pairs):
                        break  # the same pair already stands as a RAG-PT pair
                    pairs.append({**base, "kind": "hallucination", "subkind": h.kind, "chosen": gold,
                                  "rejected": h.text, "relevance": h.relevance, "detail": h.detail})
                    break  # one per question: the first (most relevant) kind
            pairs = [p for p in pairs if p["chosen"] and p["rejected"] and
                     (p["chosen"] != p["rejected"] or p["rejected_image"] is not None)]
            for i, p in enumerate(pairs):
                p["id"] = f"{it.qid}:{p['kind']}:{i}"
                fh.write(json.dumps(p) + "\n")
            fh.write(json.dumps(q_rec) + "\n")
            fh.flush()
            n_new += 1
    # weights: hallucination pairs get normalised relevances, the rest 1 (rewritten in place, atomically)
    recs = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    hall = [r for r in recs if r.get("type") == "pair" and r["kind"] == "hallucination"]
    for r, w in zip(hall, normalise_weights([float(r["relevance"]) for r in hall])):
        r["weight"] = w
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in recs))
    tmp.replace(out)
    pair_recs = [r for r in recs if r.get("type") == "pair"]
    q_recs = [r for r in recs if r.get("type") == "question" and "skipped" not in r]
    counts = Counter(r["kind"] for r in pair_recs)
    sub = Counter(f"{r['kind']}/{r['subkind']}" for r in pair_recs if r["subkind"])
    cfg = pipeline.config
    n_done = sum(1 for r in recs if r.get("type") == "question")
    meta = {"pairs": out.name, "questions_selected": len(chosen), "questions_done": n_done, "data": str(data),
            "images": str(images), "format": opts.fmt, "seed": opts.seed, "limit": opts.limit,
            "f1_threshold": opts.f1_threshold, "replace": opts.replace if takes_image else None,
            "hallucinations": opts.hallucinations,
            "pipeline": {"name": cfg.name, "source": cfg.source, "generator": cfg.to_dict()["generator"]},
            "index": str(pipeline.index_path), "generator_model": gen.model_id,
            "generator_takes_image": takes_image,
            "counts": {k: counts.get(k, 0) for k in KINDS}, "subkinds": dict(sorted(sub.items())),
            "n_pairs": len(pair_recs), "n_questions_answered": len(q_recs),
            "n_questions_skipped": sum(1 for r in recs if r.get("type") == "question" and "skipped" in r),
            "rates": _rates(q_recs),
            "note": None if takes_image else "cross-modality pairs need a generator that takes the image; "
                                              f"{gen.model_id} is text-only, so none were built",
            "seconds_this_run": round(time.perf_counter() - t0, 1), "questions_this_run": n_new,
            "ragmed_version": __version__, **opts.extra}
    Path(str(out) + ".meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def _rates(q: list[dict[str, Any]]) -> dict[str, float | int]:
    n = len(q)
    if not n:
        return {"n": 0}
    f = lambda cond: round(sum(1 for r in q if cond(r)) / n, 4)  # noqa: E731
    out = {"n": n, "accuracy_rag": f(lambda r: r["rag_correct"]), "accuracy_no_rag": f(lambda r: r["no_rag_correct"]),
           "helpful": f(lambda r: r["rag_correct"] and not r["no_rag_correct"]),
           "over_reliance": f(lambda r: r["no_rag_correct"] and not r["rag_correct"])}
    if any("copy" in r for r in q):
        out["copy_rate"] = f(lambda r: r.get("copy", False))
    return out


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    """The pairs of a pair file (question records skipped)."""
    return [r for r in (json.loads(x) for x in Path(path).read_text().splitlines() if x.strip())
            if r.get("type") == "pair"]


def answer_key(text: str) -> str:
    """A pair side's answer for balancing: its first word, lower-cased, without punctuation (``"No." → "no"``)."""
    import re

    words = re.findall(r"[a-z0-9]+", (text or "").lower())
    return words[0] if words else ""


def balance_pairs(pairs: list[dict[str, Any]], seed: int = 0, answers: tuple[str, ...] = ("yes", "no")
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Pairs balanced by answer so that DPO cannot lower its loss by learning a yes / no prior: within each pair kind,
    the pairs whose *chosen* answer is one of ``answers`` are downsampled (seeded) to the same count for each of
    them (the smallest); pairs with any other chosen answer are all kept. Returns (pairs, report of the counts
    before and after). A cross-modality pair's two sides carry the same answer, so there it is the prior under the
    replaced image that balancing removes (all-"no" pairs would teach "noise image → yes")."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    for kind in sorted({p["kind"] for p in pairs}):
        mine = [p for p in pairs if p["kind"] == kind]
        groups = {a: [p for p in mine if answer_key(p["chosen"]) == a] for a in answers}
        rest = [p for p in mine if answer_key(p["chosen"]) not in answers]
        n = min(len(g) for g in groups.values())
        kept = [p for a in answers for p in rng.sample(groups[a], n)] + rest
        report[kind] = {"before": {a: len(g) for a, g in groups.items()} | {"other": len(rest)},
                        "after": {a: n for a in answers} | {"other": len(rest)}}
        out.extend(kept)
    keep_ids = {p["id"] for p in out}
    return [p for p in pairs if p["id"] in keep_ids], report
