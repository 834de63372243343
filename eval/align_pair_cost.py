"""Per-question cost of building RAG-PT pairs with ragmed-vlm, by stage, with and without the text-vector memory
(:class:`ragmed.align.memo.MemoTextEncoder`), and whether the answers stay the same.

The stages are exactly those of :func:`ragmed.align.pairs.build_pairs` for one question: ``retrieve`` (once per
question, reused by every condition), ``answer`` (selection, the generator with the evidence, the abstention step's
evidence vote), ``no_rag`` (the generator alone) and ``noise`` (the generator with the evidence and a noise image).
Both pipelines live in one process and share one generator; for each question the plain one and the memo one run
back to back (alternating which goes first), so both see the same machine load. Training questions only (the split's
training half). The result records the load average, since the shared 2-core machine is rarely idle.

    python eval/align_pair_cost.py --index WORK/index --data WORK/train_closed.json --n 30 \
        --out eval/results/align_pair_cost.json  $(python eval/align_vlm.py sets)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ("retrieve", "answer", "no_rag", "noise")


def one(p, gen, it, images, seed):
    from ragmed.align.pairs import item_seed, noise_image
    from ragmed.eval.vqa import short_answer
    from ragmed.io import load_image

    t, T = {}, time.perf_counter
    img = load_image(images / it.image)
    s = T()
    r = p.retrieve(img, it.question, exclude_hashes={img.content_hash})
    t["retrieve"] = T() - s
    s = T()
    ans = p.answer(r, it.question, task="closed")
    t["answer"] = T() - s
    s = T()
    bare = gen.generate(it.question, [], [], image=img, domain=r.domain, task="closed")
    t["no_rag"] = T() - s
    s = T()
    g = gen.generate(it.question, ans.evidence, ans.knowledge, image=noise_image(img, item_seed(seed, it.qid)),
                     domain=r.domain, task="closed")
    t["noise"] = T() - s
    return t, (short_answer(ans), short_answer(bare), short_answer(g), ans.insufficient_evidence)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--data", required=True, help="training questions (never the evaluation half)")
    ap.add_argument("--images", default=str(REPO.parent / "shared" / "data" / "vqa-rad" / "images"))
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    os.environ.setdefault("RAGMED_THREADS", "1")  # a script, not library code: one torch thread, as the pair runs
    from ragmed.align import pipeline_variant
    from ragmed.align.memo import MemoTextEncoder
    from ragmed.corpus.vqa import read_qa
    from ragmed.pipeline import Pipeline

    out = Path(a.out)
    variant, _ = pipeline_variant(None, a.sets, out.with_suffix(".pipeline.yaml"))
    plain = Pipeline.for_index(a.index, variant)
    gen = plain.generator
    gen.warm_up()
    memo_enc = MemoTextEncoder(plain.text_encoder)
    memo = Pipeline.for_index(a.index, variant, text_encoder=memo_enc, generator=gen)
    items = read_qa(a.data)
    items = random.Random(a.seed).sample(items, min(a.n, len(items)))
    images = Path(a.images)
    rows, same = {"plain": [], "memo": []}, []
    load0 = os.getloadavg()
    for i, it in enumerate(items):
        order = [("plain", plain), ("memo", memo)] if i % 2 == 0 else [("memo", memo), ("plain", plain)]
        res = {}
        for name, p in order:
            t, answers = one(p, gen, it, images, a.seed)
            rows[name].append(t)
            res[name] = answers
        same.append(res["plain"] == res["memo"])
        print(i, {n: round(sum(rows[n][-1].values()), 2) for n in rows}, res["plain"] == res["memo"],
              file=sys.stderr, flush=True)
    load1 = os.getloadavg()

    def summary(ts):
        per = {k: round(statistics.median(t[k] for t in ts), 3) for k in STAGES}
        tot = [sum(t.values()) for t in ts]
        return {"median_seconds_by_stage": per, "median_seconds_per_question": round(statistics.median(tot), 3),
                "mean_seconds_per_question": round(statistics.fmean(tot), 3),
                "median_seconds_per_question_second_half": round(statistics.median(tot[len(tot) // 2:]), 3)}

    res = {"task": "align-pair-cost", "schema": 1, "date": time.strftime("%Y-%m-%d"), "n_questions": len(items),
           "generator": gen.model_id, "plain": summary(rows["plain"]), "memo": summary(rows["memo"]),
           "memo_stats": memo_enc.stats(), "answers_identical": sum(same), "answers_compared": len(same),
           "load_average_start_end": [round(load0[0], 2), round(load1[0], 2)], "torch_threads": None,
           "overrides": [x.replace(str(REPO), "$REPO") for x in a.sets],
           "command": "python eval/align_pair_cost.py --index WORK/index --data WORK/train_closed.json "
                      f"--n {a.n} --seed {a.seed} --out {out.name} $(python eval/align_vlm.py sets)"}
    try:
        import torch
        res["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    res["speedup_median"] = round(res["plain"]["median_seconds_per_question"]
                                  / max(1e-9, res["memo"]["median_seconds_per_question"]), 2)
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
