"""Time per DPO step (LoRA r 16 on the attention projections, gradient checkpointing off) on this CPU, at batch 1 and 4,
on real RAG-PT pairs and the real SmolLM2-135M weights.

    python eval/bench_dpo.py --pairs WORK/pairs.jsonl [--steps 3] [--batches 1,4] [--threads 2]

For each batch size: a short ``train_dpo`` run (``--steps`` optimiser steps) into a temporary folder; reports the
wall seconds per step (median over the steps, the first one included), the process CPU seconds per step (less
sensitive to other jobs on a shared machine) and the load average around the run, and the mean prompt+answer length
in tokens. Result: ``eval/results/bench_dpo.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--pipeline", default=None, help="default: the pair file's pipeline")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(REPO / "eval" / "results" / "bench_dpo.json"))
    a = ap.parse_args(argv)

    from ragmed.align.pairs import read_pairs
    from ragmed.align.train import TrainOptions, train_dpo
    from ragmed.pipeline import Pipeline

    pairs = Path(a.pairs)
    meta = json.loads(Path(str(pairs) + ".meta.json").read_text())
    pipe = a.pipeline or str(pairs.parent / meta["pipeline_file"])
    rows = []
    for b in [int(x) for x in a.batches.split(",")]:
        p = Pipeline.from_yaml(pipe)  # a fresh generator each time: training injects LoRA layers into its model
        gen = p.generator
        gen.warm_up()
        tok = gen.tokenizer
        lens = [len(tok.apply_chat_template(pr["prompt"] + [{"role": "assistant", "content": pr["chosen"]}],
                                            tokenize=True, return_dict=True)["input_ids"]) for pr in read_pairs(pairs)]
        load0 = os.getloadavg()[0]
        c0 = time.process_time()
        with tempfile.TemporaryDirectory() as d:
            card = train_dpo(gen, pairs, d, TrainOptions(max_steps=a.steps, batch_size=b, save_steps=10 ** 6,
                                                         threads=a.threads, seed=0))
        cpu = time.process_time() - c0
        rows.append({"batch_size": b, "steps": card["steps"], "seconds_per_step_mean": card["seconds_per_step"],
                     "seconds_per_step_median": card["seconds_per_step_median"],
                     "cpu_seconds_per_step": round(cpu / max(1, card["steps"]), 2),
                     "cpu_seconds_note": "process CPU time of the whole short run (model set-up included) / steps",
                     "load_average_before": round(load0, 2), "load_average_after": round(os.getloadavg()[0], 2),
                     "tokens_per_sequence_mean": round(statistics.mean(lens), 1), "tokens_per_sequence_max": max(lens)})
        print(rows[-1], flush=True)
    import torch

    res = {"task": "bench-dpo", "schema": 1, "date": time.strftime("%Y-%m-%d"),
           "command": "python eval/bench_dpo.py " + " ".join(
               x if not x.startswith("/") else "$WORK/" + Path(x).name for x in (argv or sys.argv[1:])),
           "model": meta.get("generator_model"), "lora": {"r": 16, "alpha": 32, "targets": "q,k,v,o_proj"},
           "gradient_checkpointing": False, "torch_threads": a.threads or torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "rows": rows,
           "note": "a shared 2-core machine: wall time depends on the other jobs (see the load averages); "
                   "CPU seconds per step are the steadier figure"}
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
