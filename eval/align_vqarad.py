"""RAG-PT alignment of the default generator on VQA-RAD, end to end, and one result file.

    python eval/align_vqarad.py --work /tmp/align [--pair-limit 240] [--max-steps 30] [--eval-limit 60]

Stages (each skipped when its output exists, so the script resumes; every command is recorded):

1. split VQA-RAD ``train.json`` by image (``ragmed.eval.split``, seed 0, 80 % index side);
2. build an index from the index side with the default pipeline;
3. ``ragmed align pairs`` on (a seeded subset of) the index side's questions, each question's own image excluded
   from its retrieval, with the default pipeline and ``generator.params.closed=model`` (the vote is not trainable);
4. ``ragmed align train`` (DPO + LoRA on the real SmolLM2-135M weights, CPU, ``--resume``);
5. ``ragmed eval align`` on (a seeded subset of) the evaluation side — never seen by the index or the pairs — base
   generator vs the adapter, bootstrap over images.

Writes ``eval/results/align_vqarad.json`` (counts, training figures, the table, commands with ``$WORK`` / ``$DATA``
for the machine's paths) and copies the curves and the evaluation plot beside it. ``--collect`` only assembles the
result from a finished work directory. Long: run it in the background with ``nice``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "eval" / "results"


def run(cmd: list[str], log: list[str], work: Path, data: Path) -> None:
    shown = " ".join(cmd).replace(str(work), "$WORK").replace(str(data), "$DATA").replace(sys.executable, "python")
    log.append(shown)
    print("+", shown, flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="ragmed's shared data folder")
    ap.add_argument("--work", required=True)
    ap.add_argument("--pair-limit", type=int, default=240)
    ap.add_argument("--max-steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--eval-limit", type=int, default=60)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--collect", action="store_true", help="only assemble the result from WORK")
    ap.add_argument("--out", default=str(RESULTS / "align_vqarad.json"))
    a = ap.parse_args(argv)
    data, work = Path(a.data).resolve(), Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    vqa = data / "vqa-rad"
    ragmed = [sys.executable, "-m", "ragmed"]
    cmds: list[str] = []
    sets = ["--set", "generator.params.closed=model"]
    pairs, run_dir, ev = work / "pairs.jsonl", work / "run", work / "eval.json"
    if not a.collect:
        if not (work / "split" / "eval.json").exists():
            run([sys.executable, "-m", "ragmed.eval.split", str(vqa / "train.json"), "--out", str(work / "split"),
                 "--seed", "0"], cmds, work, data)
        if not (work / "index").exists():
            run(ragmed + ["index", "build", "--corpus", str(work / "split" / "index.json"), "--format", "vqa-rad",
                          "--images", str(vqa / "images"), "--out", str(work / "index"), "-q"], cmds, work, data)
        run(ragmed + ["align", "pairs", "--index", str(work / "index"), "--data", str(work / "split" / "index.json"),
                      "--images", str(vqa / "images"), *sets, "--out", str(pairs), "--limit", str(a.pair_limit),
                      "-q"], cmds, work, data)
        if not (run_dir / "card.json").exists():
            run(ragmed + ["align", "train", "--pairs", str(pairs), "--out", str(run_dir), "--max-steps",
                          str(a.max_steps), "--batch-size", str(a.batch_size), "--save-steps", "2", "--resume"],
                cmds, work, data)
        run(ragmed + ["eval", "align", "--index", str(work / "index"), "--data", str(work / "split" / "eval.json"),
                      "--images", str(vqa / "images"), *sets, "--adapter", f"aligned={run_dir / 'adapter'}",
                      "--limit", str(a.eval_limit), "--bootstrap", str(a.bootstrap), "--out", str(ev), "-q"],
            cmds, work, data)
    collect(work, data, Path(a.out), cmds)
    return 0


def collect(work: Path, data: Path, out: Path, cmds: list[str]) -> dict:
    from ragmed.align.evaluate import scrub, table

    meta = json.loads((work / "pairs.jsonl.meta.json").read_text())
    card = json.loads((work / "run" / "card.json").read_text()) if (work / "run" / "card.json").exists() else None
    ev = json.loads((work / "eval.json").read_text()) if (work / "eval.json").exists() else None
    split = json.loads((work / "split" / "split.json").read_text())
    res = {
        "task": "align-vqarad", "schema": 1, "date": time.strftime("%Y-%m-%d"),
        "commands": cmds or [c for c in (work / "commands.txt").read_text().splitlines() if c]
        if (work / "commands.txt").exists() else cmds,
        "split": {"seed": split["seed"], "index_images": len(split["index_images"]),
                  "eval_images": len(split["eval_images"]), "index_questions": split["n_index_questions"],
                  "eval_questions": split["n_eval_questions"]},
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
    if card is not None and (work / "run" / "log.jsonl").exists():
        log = [{k: h[k] for k in ("step", "loss", "loss_unweighted", "rewards/margins", "rewards/accuracies",
                                  "step_seconds") if k in h}
               for h in map(json.loads, (work / "run" / "log.jsonl").read_text().splitlines()) if "loss" in h]
        res["training"]["log"] = log
        st = sorted(h["step_seconds"] for h in log if "step_seconds" in h)
        if st:  # every step of every (resumed) run, from the log
            res["training"].update({"steps_timed": len(st), "seconds_steps_sum": round(sum(st), 1),
                                    "seconds_per_step": round(sum(st) / len(st), 1),
                                    "seconds_per_step_median": st[len(st) // 2]})
    commands = res.pop("commands")
    res = scrub(res)  # machine paths out (the commands use $WORK / $DATA instead)
    res["commands"] = commands
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    for src, name in ((work / "run" / "curves.png", "align_vqarad_curves.png"), (work / "eval.png", "align_vqarad_eval.png")):
        if src.exists():
            shutil.copy(src, out.parent / name)
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    raise SystemExit(main())
