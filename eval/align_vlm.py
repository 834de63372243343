"""Cross-modality alignment of ragmed-vlm (SmolLM2-135M + the ragmed CNN tower) on VQA-RAD, and one result file.

The generator that takes the image: MMed-RAG's cross-modality pairs exist only here (a text-only model sees the same
input with the image replaced). Stages, each a plain ``ragmed`` command (``--help`` of this script lists the
helpers); the committed result (eval/results/align_vlm.json) lists the commands that actually ran, with $WORK and
$DATA for the machine's paths:

1. ``prepare``: the committed split eval/splits/vqa_rad_vlm_seed0.json applied to $DATA/vqa-rad/train.json; its
   *closed* questions only (ragmed-vlm answers them by scoring yes / no: ``closed: model``; open questions are left
   out to fit the shared CPU), training side in two halves by image (two pair builders in parallel), and
   ``--eval-n`` seeded closed questions of the evaluation images;
2. ``ragmed align pairs`` with ragmed-vlm as the generator (``SETS``: the retrieval prompt of the default prompts —
   two retrieved cases of 120 characters, no knowledge lines — with the image first; ragmed-vlm's own prompt has no
   evidence in it, so retrieval could neither help nor harm), on each half, bounded by time, then
   ``--max-new 0`` on the merged file (``finalise``) to recount and reweight;
3. ``finalise`` also balances the pairs by answer (:func:`ragmed.align.pairs.balance_pairs`: per kind, as many
   pairs whose chosen answer is "yes" as "no", the majority downsampled, seeded) and caps them at ``--cap`` (the
   DPO steps the CPU can run in the time left: every RAG-PT pair is kept, the hallucination pairs fill the rest,
   still balanced by answer);
4. ``ragmed align train`` (DPO + LoRA r 16, β 0.1, one epoch, batch 1, ``--resume``);
5. ``ragmed eval align`` on the evaluation questions, base vs adapter (answers cached per model; the adapter's in
   parallel shards by image, merged), with the image replaced by noise and by an unrelated evaluation image of
   another organ;
6. ``collect``: the result JSON (pairs, balance, training, the table, per-answer diagnosis; ``--extra KEY=FILE``
   adds e.g. the dev-slice selection).

The scaled run (eval/results/align_vlm_scaled.json) adds: ``finalise --kind-cap KIND=N`` (cap one kind, yes / no
kept equal), a dev slice of training images no pair came from to choose between adapters, and ``shard-eval``
(evaluation shards by image whose answer caches hold only the base generator's answers, so that an adapter directory
with the same name as an earlier one cannot reuse that one's answers).
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "eval" / "results"
SPLIT = REPO / "eval" / "splits" / "vqa_rad_vlm_seed0.json"
PROMPTS = "ragmed/generate/prompts/default"  # relative to the repository: the retrieval prompt
SETS = ["generator.name=ragmed-vlm", "generator.params.closed=model", f"generator.params.prompts_dir=$REPO/{PROMPTS}",
        "generator.params.max_evidence=2", "generator.params.evidence_chars=120", "generator.params.max_knowledge=0",
        "generator.params.threads=1"]


def set_args() -> list[str]:
    return [x for s in SETS for x in ("--set", s.replace("$REPO", str(REPO)))]


def closed(rows: list[dict]) -> list[dict]:
    return [r for r in rows if str(r.get("answer_type", "")).strip().upper() == "CLOSED"]


def prepare(data: Path, work: Path, eval_n: int, shards: int = 2, seed: int = 0) -> dict:
    split = json.loads(SPLIT.read_text())
    rows = json.loads((data / "vqa-rad" / "train.json").read_text())
    tr_imgs, ev_imgs = set(split["train_images"]), set(split["eval_images"])
    tr = closed([r for r in rows if r["image_name"] in tr_imgs])
    ev = closed([r for r in rows if r["image_name"] in ev_imgs])
    assert not ({r["image_name"] for r in tr} & {r["image_name"] for r in ev})
    work.mkdir(parents=True, exist_ok=True)
    (work / "train_closed.json").write_text(json.dumps(tr))
    (work / "eval_closed.json").write_text(json.dumps(ev))
    ims = sorted({r["image_name"] for r in tr})
    for s in range(shards):
        mine = set(ims[s::shards])
        (work / f"train_closed_{'ab'[s]}.json").write_text(json.dumps([r for r in tr if r["image_name"] in mine]))
    idx = list(range(len(ev)))
    random.Random(seed).shuffle(idx)
    sel = [ev[i] for i in sorted(idx[:eval_n])]
    (work / f"eval{eval_n}.json").write_text(json.dumps(sel))
    info = {"file": f"eval/splits/{SPLIT.name}", "train_images": len(tr_imgs), "eval_images": len(ev_imgs),
            "train_closed_questions": len(tr), "eval_closed_questions": len(ev), "eval_n": len(sel),
            "eval_n_images": len({r["image_name"] for r in sel})}
    (work / "split.json").write_text(json.dumps(info, indent=1))
    return info


def stratified_cap(pairs: list[dict], cap: int, seed: int) -> list[dict]:
    """At most ``cap`` pairs: every RAG-PT pair (cross-modality, helpful, harmful) is kept and the hallucination
    pairs fill the rest, drawn (seeded) so that their chosen answers stay balanced."""
    if cap <= 0 or len(pairs) <= cap:
        return pairs
    rng = random.Random(seed)
    keep = {p["id"] for p in pairs if p["kind"] != "hallucination"}
    keep.update(_balanced_sample(pairs, "hallucination", max(0, cap - len(keep)), rng))
    return [p for p in pairs if p["id"] in keep]


def _balanced_sample(pairs: list[dict], kind: str, n: int, rng: random.Random) -> set:
    """Ids of about ``n`` pairs of ``kind``, drawn from each chosen answer in proportion to its share (so a balanced
    kind stays balanced)."""
    from ragmed.align.pairs import answer_key

    groups: dict[str, list[dict]] = {}
    for p in pairs:
        if p["kind"] == kind:
            groups.setdefault(answer_key(p["chosen"]), []).append(p)
    total = sum(len(g) for g in groups.values())
    return {p["id"] for key in sorted(groups)
            for p in rng.sample(groups[key], min(len(groups[key]), round(len(groups[key]) * n / max(1, total))))}


def kind_caps(pairs: list[dict], caps: dict[str, int], seed: int) -> list[dict]:
    """At most ``caps[kind]`` pairs of each capped kind, drawn (seeded) equally from each chosen answer (balance
    kept); kinds not named are left whole."""
    rng = random.Random(seed)
    keep = {p["id"] for p in pairs if p["kind"] not in caps}
    for kind, n in caps.items():
        keep.update(_balanced_sample(pairs, kind, n, rng))
    return [p for p in pairs if p["id"] in keep]


def finalise(work: Path, cap: int, seed: int = 0, kind_cap: dict[str, int] | None = None) -> dict:
    """Balance the merged pair file (``pairs.jsonl``, already recounted by ``ragmed align pairs --max-new 0``) and
    cap it: ``pairs_bal.jsonl`` + its meta."""
    from ragmed.align.pairs import balance_pairs, read_pairs

    src = work / "pairs.jsonl"
    meta = json.loads((work / "pairs.jsonl.meta.json").read_text())
    bal, report = balance_pairs(read_pairs(src), seed=seed)
    capped = stratified_cap(kind_caps(bal, kind_cap or {}, seed), cap, seed)
    out = work / "pairs_bal.jsonl"
    out.write_text("".join(json.dumps(p) + "\n" for p in capped))
    meta.update({"pairs": out.name, "balanced_from": src.name, "balance": report, "cap": cap, "kind_cap": kind_cap,
                 "counts_before_balance": meta.get("counts"), "n_pairs_before_balance": meta.get("n_pairs"),
                 "counts": dict(Counter(p["kind"] for p in capped)), "n_pairs": len(capped),
                 "chosen_answers": dict(Counter(f"{p['kind']}/{p['chosen']}" for p in capped))})
    (work / "pairs_bal.jsonl.meta.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps({k: meta[k] for k in ("counts_before_balance", "counts", "balance")}, indent=1))
    return meta


def merge_shards(work: Path) -> None:
    """pairs_a.jsonl + pairs_b.jsonl → pairs.jsonl (disjoint images, so disjoint questions)."""
    with (work / "pairs.jsonl").open("w") as fh:
        for s in "ab":
            fh.write((work / f"pairs_{s}.jsonl").read_text())


def merge_eval(work: Path, name: str, parts: list[str]) -> None:
    """Adapter-answer caches of parallel shards (and the base answers) → one cache for the final bootstrap run."""
    seen = set()
    with (work / f"{name}.predictions.jsonl").open("w") as fh:
        for p in parts:
            for line in (work / p).read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    if (r["model"], r["qid"]) not in seen:
                        seen.add((r["model"], r["qid"]))
                        fh.write(line + "\n")


def shard_eval(work: Path, name: str, base_cache: Path, model: str, shards: int) -> list[str]:
    """``<name>.json`` (evaluation questions) split by image into ``shards`` files ``<name>_<i>.json``, each with an
    answer cache ``<name>_<i>.align.predictions.jsonl`` seeded with ``model``'s cached answers (the base generator's:
    only the adapter's answers are computed; rows of any other model, e.g. an earlier adapter of the same directory
    name, are left out)."""
    rows = json.loads((work / f"{name}.json").read_text())
    cached = {}
    for line in base_cache.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if r["model"] == model:
                cached[str(r["qid"])] = line
    ims = sorted({r["image_name"] for r in rows})
    out = []
    for i in range(shards):
        mine = set(ims[i::shards])
        part = [r for r in rows if r["image_name"] in mine]
        (work / f"{name}_{i}.json").write_text(json.dumps(part))
        (work / f"{name}_{i}.align.predictions.jsonl").write_text(
            "".join(cached[str(r["qid"])] + "\n" for r in part if str(r["qid"]) in cached))
        out.append(f"{name}_{i}")
    print(f"{len(rows)} questions, {len(ims)} images, {sum(str(r['qid']) in cached for r in rows)} cached for {model}"
          f" → {shards} shards")
    return out


def diagnosis(preds: Path, gens: dict[str, str]) -> dict:
    rows = [json.loads(x) for x in preds.read_text().splitlines() if x.strip()]
    out = {}
    for name, mid in gens.items():
        rs = [r for r in rows if r["model"] == mid]
        n = max(1, len(rs))
        f = lambda c: round(sum(1 for r in rs if c(r)) / n, 4)  # noqa: E731
        yes = lambda s: (s or "").strip().lower().startswith("yes")  # noqa: E731
        out[name] = {"n": len(rs), "said_yes_real": f(lambda r: yes(r["rag"])),
                     "said_yes_noise": f(lambda r: yes(r.get("noise"))),
                     "said_yes_unrelated": f(lambda r: yes(r.get("unrelated"))),
                     "said_yes_no_rag": f(lambda r: yes(r["no_rag"])),
                     "gold_yes": f(lambda r: yes(r["gold"])),
                     "rag_equals_no_rag": f(lambda r: r["rag"].strip().lower() == r["no_rag"].strip().lower())}
    return out


def collect(work: Path, out: Path, ev_name: str, commands: list[str], run: str = "run",
            extra: dict[str, Path] | None = None) -> dict:
    from ragmed.align.evaluate import scrub, table

    meta = json.loads((work / "pairs_bal.jsonl.meta.json").read_text())
    run_dir = work / run
    card = json.loads((run_dir / "card.json").read_text()) if (run_dir / "card.json").exists() else None
    ev_path = work / f"{ev_name}.json"
    ev = json.loads(ev_path.read_text()) if ev_path.exists() else None
    res = {
        "task": "align-vlm-vqarad", "schema": 1, "date": time.strftime("%Y-%m-%d"), "generator": "ragmed-vlm",
        "prompt_overrides": SETS, "split": json.loads((work / "split.json").read_text()),
        "pairs": {k: meta.get(k) for k in ("counts_before_balance", "n_pairs_before_balance", "balance", "cap", "kind_cap",
                                           "counts", "n_pairs", "chosen_answers", "subkinds", "questions_done",
                                           "n_questions_answered", "n_questions_skipped", "rates",
                                           "generator_model", "generator_takes_image", "replace", "seed")},
        "training": None if card is None else {k: card.get(k) for k in (
            "base_model", "kind", "device", "steps", "seconds_total", "seconds_per_step", "seconds_per_step_median",
            "first_loss", "last_loss", "last_margin", "hyper_parameters", "data", "versions")},
        "evaluation": None if ev is None else {k: ev.get(k) for k in (
            "config", "generators", "n_questions", "n_images", "models", "deltas_vs_base", "skipped", "seconds")},
        "table": None if ev is None else table(ev).splitlines(),
    }
    if card is not None and (run_dir / "log.jsonl").exists():
        res["training"]["log"] = [
            {k: h[k] for k in ("step", "loss", "loss_unweighted", "rewards/margins", "rewards/accuracies",
                               "step_seconds") if k in h}
            for h in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "loss" in h]
    preds = ev_path.with_suffix(".predictions.jsonl")
    if ev is not None and preds.exists():
        res["diagnosis"] = diagnosis(preds, ev["generators"])
    for key, path in (extra or {}).items():  # e.g. the pair-cost measurement, the dev-slice selection
        res[key] = json.loads(path.read_text()) if path.suffix == ".json" else path.read_text().splitlines()
    res = scrub(res)
    res["split"]["file"] = f"eval/splits/{SPLIT.name}"
    res["prompt_overrides"] = SETS
    res["commands"] = commands
    out.write_text(json.dumps(res, indent=1))
    for src, name in ((run_dir / "curves.png", f"{out.stem}_curves.png"), (ev_path.with_suffix(".png"),
                                                                           f"{out.stem}_eval.png")):
        if src.exists():
            shutil.copy(src, out.parent / name)
    print(f"wrote {out}")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["prepare", "sets", "merge", "finalise", "shard-eval", "merge-eval", "collect"])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--work", required=True)
    ap.add_argument("--eval-n", type=int, default=150)
    ap.add_argument("--cap", type=int, default=0, help="finalise: at most this many pairs (0: all)")
    ap.add_argument("--kind-cap", action="append", default=[], metavar="KIND=N",
                    help="finalise: at most N pairs of this kind (balance kept; repeatable)")
    ap.add_argument("--eval-name", default="ev")
    ap.add_argument("--parts", nargs="*", default=[])
    ap.add_argument("--base-cache", help="shard-eval: an answer cache holding the base generator's answers")
    ap.add_argument("--model", default="ragmed-vlm:ragmed-vlm", help="shard-eval: whose cached answers seed the shards")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--commands", help="collect: a text file of the commands that ran (one a line)")
    ap.add_argument("--out", default=str(RESULTS / "align_vlm.json"))
    ap.add_argument("--run", default="run", help="collect: the training run directory under WORK")
    ap.add_argument("--extra", action="append", default=[], metavar="KEY=FILE",
                    help="collect: a JSON (or text) file stored under KEY in the result (repeatable)")
    a = ap.parse_args(argv)
    work = Path(a.work).resolve()
    if a.stage == "prepare":
        print(json.dumps(prepare(Path(a.data).resolve(), work, a.eval_n), indent=1))
    elif a.stage == "sets":
        print(" ".join(set_args()))
    elif a.stage == "merge":
        merge_shards(work)
    elif a.stage == "finalise":
        finalise(work, a.cap, kind_cap={k: int(v) for k, v in (x.split("=", 1) for x in a.kind_cap)})
    elif a.stage == "shard-eval":
        shard_eval(work, a.eval_name, Path(a.base_cache), a.model, a.shards)
    elif a.stage == "merge-eval":
        merge_eval(work, a.eval_name, a.parts)
    else:
        cmds = [c for c in Path(a.commands).read_text().splitlines() if c.strip()] if a.commands else []
        collect(work, Path(a.out), a.eval_name, cmds, run=a.run,
                extra={k: Path(v) for k, v in (x.split("=", 1) for x in a.extra)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
