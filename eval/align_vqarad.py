"""RAG-PT alignment of the default generator on VQA-RAD, end to end, and one result file.

    python eval/align_vqarad.py --work /tmp/align [--pair-limit 800] [--max-steps 46] [--lr 5e-4] [--eval-n 240]

The recipe (sized for a shared 2-core CPU: ≈ 6 CPU-s per DPO step at ≈ 149 tokens, measured; torch threads 1):

- split: the committed VQA-RAD split by image, ``eval/splits/vqa_rad_vlm_seed0.json`` (220 training images / 2166
  questions, 94 evaluation images / 898 questions); the index and the pairs use only its training images, the
  evaluation only its evaluation images;
- pipeline: the default one with SmolLM2 as its generator (``generator.name=gguf``: the default's own
  ragmed-answerer is a classifier, not a causal LM DPO can train) and a short prompt, the same at pair time, training
  and evaluation (``generator.params.closed=model``: the vote is not trainable; ``max_evidence=2``, ``evidence_chars=120``,
  ``max_knowledge=0``: ~150 tokens a sequence instead of ~290, so a DPO step costs half);
- pairs: ``ragmed align pairs`` on a seeded subset of the training questions (each question's own image excluded from
  its retrieval); the committed result stopped after 60 questions (16 min, time; the file resumes) and finalised
  with ``--max-new 0`` (eval/results/align_vqarad.json lists the commands that actually ran);
- training: ``ragmed align train`` (DPO, LoRA r 16, β 0.1, batch 1, torch threads 1, ``--resume``);
- evaluation: ``ragmed eval align`` on ``--eval-n`` seeded questions of the evaluation images, base vs adapter, the
  same questions; answered in ``--shards`` parallel processes (split by image; each caches its answers), whose caches
  are merged so that the final run on all the questions only bootstraps (2000 resamples of images).

Each stage is skipped when its output exists (the script resumes). Writes ``--out`` (default
``eval/results/align_vqarad.json``: counts, training figures, the table, the commands with ``$WORK`` / ``$DATA``
for the machine's paths) and copies the curves and the evaluation plot beside it. ``--collect`` only assembles the
result from a finished work directory. Long: run it in the background with ``nohup nice``.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "eval" / "results"
SPLIT = REPO / "eval" / "splits" / "vqa_rad_vlm_seed0.json"
SETS = ["generator.name=gguf", "generator.params.closed=model", "generator.params.max_evidence=2",
        "generator.params.evidence_chars=120",
        "generator.params.max_knowledge=0"]


def shown(cmd: list[str], work: Path, data: Path) -> str:
    return (" ".join(cmd).replace(str(work), "$WORK").replace(str(data), "$DATA").replace(sys.executable, "python")
            .replace(" -m ragmed ", " ragmed ").replace("python ragmed", "ragmed"))


def run(cmd: list[str], log: list[str], work: Path, data: Path, env_note: str = "") -> None:
    log.append(shown(cmd, work, data) + env_note)
    print("+", log[-1], flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def write_split(vqa: Path, work: Path) -> dict:
    """The committed split's question files: training side (index + pairs) and evaluation side."""
    split = json.loads(SPLIT.read_text())
    rows = json.loads((vqa / "train.json").read_text())
    train_imgs, eval_imgs = set(split["train_images"]), set(split["eval_images"])
    tr = [r for r in rows if r["image_name"] in train_imgs]
    ev = [r for r in rows if r["image_name"] in eval_imgs]
    if len(tr) != split["n_train_questions"] or len(ev) != split["n_eval_questions"]:
        raise SystemExit(f"{vqa / 'train.json'} does not match {SPLIT.name}: {len(tr)}/{len(ev)} questions")
    d = work / "split"
    d.mkdir(parents=True, exist_ok=True)
    (d / "index.json").write_text(json.dumps(tr))
    (d / "eval.json").write_text(json.dumps(ev))
    info = {"file": f"eval/splits/{SPLIT.name}", "seed": split["seed"], "index_images": len(train_imgs),
            "eval_images": len(eval_imgs), "index_questions": len(tr), "eval_questions": len(ev)}
    (d / "split.json").write_text(json.dumps(info, indent=1))
    return info


def eval_subset(work: Path, n: int, shards: int, seed: int = 0) -> list[Path]:
    """``n`` seeded questions of the evaluation side (``evalN.json``) and ``shards`` files of it split by image."""
    rows = json.loads((work / "split" / "eval.json").read_text())
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    sel = [rows[i] for i in sorted(idx[:n])]
    (work / f"eval{n}.json").write_text(json.dumps(sel))
    ims = sorted({r["image_name"] for r in sel})
    parts = []
    for s in range(shards):
        mine = set(ims[s::shards])
        p = work / f"eval{n}_{'abcdefgh'[s]}.json"
        p.write_text(json.dumps([r for r in sel if r["image_name"] in mine]))
        parts.append(p)
    return parts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="ragmed's shared data folder")
    ap.add_argument("--work", required=True)
    ap.add_argument("--pair-limit", type=int, default=800)
    ap.add_argument("--max-steps", type=int, default=46)
    ap.add_argument("--lr", default="5e-4")
    ap.add_argument("--eval-n", type=int, default=240)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--no-weights", action="store_true", help="train without the per-pair weights (ablation)")
    ap.add_argument("--collect", action="store_true", help="only assemble the result from WORK")
    ap.add_argument("--out", default=str(RESULTS / "align_vqarad.json"))
    a = ap.parse_args(argv)
    data, work = Path(a.data).resolve(), Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    vqa = data / "vqa-rad"
    ragmed = [sys.executable, "-m", "ragmed"]
    cmds: list[str] = []
    sets = [x for s in SETS for x in ("--set", s)]
    pairs, run_dir = work / "pairs.jsonl", work / ("run_noweights" if a.no_weights else "run")
    ev = work / f"eval{a.eval_n}.align.json"
    if not a.collect:
        if not (work / "split" / "eval.json").exists():
            write_split(vqa, work)
            cmds.append(f"python eval/align_vqarad.py (write_split: {SPLIT.name} applied to $DATA/vqa-rad/train.json)")
        if not (work / "index").exists():
            run(ragmed + ["index", "build", "--corpus", str(work / "split" / "index.json"), "--format", "vqa-rad",
                          "--images", str(vqa / "images"), "--out", str(work / "index"), "-q"], cmds, work, data)
        if not (pairs.with_suffix(".jsonl.meta.json")).exists():
            run(ragmed + ["align", "pairs", "--index", str(work / "index"), "--data", str(work / "split" / "index.json"),
                          "--images", str(vqa / "images"), *sets, "--out", str(pairs), "--limit", str(a.pair_limit),
                          "-q"], cmds, work, data)
        if not (run_dir / "card.json").exists():
            run(ragmed + ["align", "train", "--pairs", str(pairs), "--out", str(run_dir), "--max-steps",
                          str(a.max_steps), "--batch-size", "1", "--lr", a.lr, "--save-steps", "10", "--threads", "1",
                          *(["--no-weights"] if a.no_weights else []), "--resume"], cmds, work, data)
        parts = eval_subset(work, a.eval_n, a.shards)
        adapter = ["--adapter", f"aligned={run_dir / 'adapter'}"]
        procs = []
        for p in parts:  # answer in parallel shards; each caches its answers
            cmd = ragmed + ["eval", "align", "--index", str(work / "index"), "--data", str(p), "--images",
                            str(vqa / "images"), *sets, *adapter, "--bootstrap", "200", "--out",
                            str(p.with_suffix(".align.json")), "-q"]
            cmds.append(shown(cmd, work, data) + "   # in parallel")
            procs.append(subprocess.Popen(cmd, cwd=REPO))
        if any(pr.wait() for pr in procs):
            raise SystemExit("an evaluation shard failed")
        merged = ev.with_suffix(".predictions.jsonl")
        with merged.open("w") as fh:
            for p in parts:
                fh.write(p.with_suffix(".align.predictions.jsonl").read_text())
        cmds.append("cat $WORK/eval*_?.align.predictions.jsonl > " + shown([str(merged)], work, data))
        run(ragmed + ["eval", "align", "--index", str(work / "index"), "--data", str(work / f"eval{a.eval_n}.json"),
                      "--images", str(vqa / "images"), *sets, *adapter, "--bootstrap", str(a.bootstrap),
                      "--out", str(ev), "-q"], cmds, work, data)
        (work / "commands.txt").write_text("\n".join(cmds) + "\n")
    collect(work, Path(a.out), cmds, run_dir, ev)
    return 0


def collect(work: Path, out: Path, cmds: list[str], run_dir: Path, ev_path: Path) -> dict:
    from ragmed.align.evaluate import scrub, table

    meta = json.loads((work / "pairs.jsonl.meta.json").read_text())
    card = json.loads((run_dir / "card.json").read_text()) if (run_dir / "card.json").exists() else None
    ev = json.loads(ev_path.read_text()) if ev_path.exists() else None
    res = {
        "task": "align-vqarad", "schema": 2, "date": time.strftime("%Y-%m-%d"),
        "commands": cmds or ([c for c in (work / "commands.txt").read_text().splitlines() if c]
                             if (work / "commands.txt").exists() else []),
        "prompt_overrides": SETS,
        "split": json.loads((work / "split" / "split.json").read_text()),
        "pairs": {k: meta.get(k) for k in ("counts", "subkinds", "n_pairs", "questions_selected", "questions_done",
                                           "n_questions_answered", "n_questions_skipped", "rates", "note",
                                           "generator_model", "f1_threshold", "seed", "limit")},
        "training": None if card is None else {k: card.get(k) for k in (
            "base_model", "kind", "device", "steps", "seconds_total", "seconds_per_step", "seconds_per_step_median",
            "first_loss", "last_loss", "last_margin", "hyper_parameters", "data", "versions")},
        "evaluation": None if ev is None else {k: ev.get(k) for k in (
            "config", "generators", "n_questions", "n_images", "models", "deltas_vs_base", "copy_rate_note",
            "skipped", "seconds")},
        "table": None if ev is None else table(ev).splitlines(),
    }
    if card is not None and (run_dir / "log.jsonl").exists():
        log = [{k: h[k] for k in ("step", "loss", "loss_unweighted", "rewards/margins", "rewards/accuracies",
                                  "step_seconds") if k in h}
               for h in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "loss" in h]
        res["training"]["log"] = log
        st = sorted(h["step_seconds"] for h in log if "step_seconds" in h)
        if st:  # every step of every (resumed) run, from the log
            res["training"].update({"steps_timed": len(st), "seconds_steps_sum": round(sum(st), 1),
                                    "seconds_per_step": round(sum(st) / len(st), 1),
                                    "seconds_per_step_median": st[len(st) // 2]})
    preds = ev_path.with_suffix(".predictions.jsonl")
    if ev is not None and preds.exists():  # what changed: answers equal with / without retrieval, closed answers "no"
        gens = ev["generators"]
        rows = {(r["model"], r["qid"]): r for r in map(json.loads, preds.read_text().splitlines()) if r}
        diag = {}
        for name, mid in gens.items():
            rs = [r for (m, _), r in rows.items() if m == mid]
            cl = [r for r in rs if r["task"] == "closed"]
            diag[name] = {"n": len(rs), "rag_equals_no_rag": round(sum(
                r["rag"].strip().lower() == r["no_rag"].strip().lower() for r in rs) / max(1, len(rs)), 4),
                "closed_answered_no_with_retrieval": round(sum(
                    r["rag"].strip().lower().startswith("no") for r in cl) / max(1, len(cl)), 4),
                "closed_gold_no": round(sum(r["gold"].strip().lower() == "no" for r in cl) / max(1, len(cl)), 4)}
        res["diagnosis"] = diag
    commands = res.pop("commands")
    res = scrub(res)  # machine paths out (the commands use $WORK / $DATA instead)
    res["commands"] = commands
    res["split"]["file"] = f"eval/splits/{SPLIT.name}"  # a repository path, not a machine path (scrub would cut it)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    stem = out.stem
    for src, name in ((run_dir / "curves.png", f"{stem}_curves.png"), (ev_path.with_suffix(".png"), f"{stem}_eval.png")):
        if src.exists():
            shutil.copy(src, out.parent / name)
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    raise SystemExit(main())
