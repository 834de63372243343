"""``ragmed ask`` latency per generator backend: cold start (a fresh ``ragmed ask`` process, import to exit) and warm
latency (``Pipeline.ask`` in a process that already answered once), p50 / p95.

    python eval/bench_ask.py --index /tmp/vqarad-idx --generators extractive
    python eval/bench_ask.py --index IDX --generators 'extractive,gguf:{"path": "/models/smollm2.gguf"}'

Each generator is ``NAME`` or ``NAME:{json params}``; the pipeline is the one that built the index with only its
generator replaced (written to a temporary YAML so the CLI can load it). Questions: VQA-RAD questions about images
(the image's own case excluded from retrieval, as in the VQA evaluation).

Cold runs also report the CPU seconds (user + system) of the whole ``ragmed ask`` process tree, including a child
process it starts (e.g. ragmed-answerer's fallback, which outlives its parent by a moment): on Linux this script
makes itself a child subreaper and reaps those descendants. On a shared machine CPU seconds move far less with the
load than wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from ragmed.eval.bench import percentiles, table, write_result  # noqa: E402

DATA = Path(os.environ.get("RAGMED_DATA", REPO.parent / "shared" / "data"))


def parse_generators(text: str) -> list[tuple[str, dict]]:
    out, depth, cur = [], 0, ""
    for ch in text:  # split on commas outside braces
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    gens = []
    for g in out:
        name, _, params = g.strip().partition(":")
        gens.append((name, json.loads(params) if params else {}))
    return gens


def pipeline_yaml(index: str, generator: str, params: dict, tmp: Path) -> Path:
    from ragmed.pipeline import Pipeline

    cfg = Pipeline.for_index(index).config
    data = cfg.to_dict()
    data["generator"] = {"name": generator, "params": params}
    p = tmp / f"bench_{generator}.yaml"
    import yaml

    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def become_subreaper() -> bool:
    """Orphaned descendants of the cold ``ragmed ask`` runs are re-parented to this process (Linux
    PR_SET_CHILD_SUBREAPER), so their CPU time is counted in RUSAGE_CHILDREN once reaped."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_descendants() -> None:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def questions(data: Path, images: Path, n: int, seed: int) -> list[tuple[str, str]]:
    items = json.loads(data.read_text())
    rng = random.Random(seed)
    rng.shuffle(items)
    return [(str(images / it["image_name"]), it["question"]) for it in items[:n]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--generators", default="extractive")
    ap.add_argument("--data", default=str(DATA / "vqa-rad/train.json"))
    ap.add_argument("--images", default=str(DATA / "vqa-rad/images"))
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--warm-runs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench_ask")
    ap.add_argument("--warm-worker", nargs=2, metavar=("PIPELINE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    qs = questions(Path(args.data), Path(args.images), max(args.warm_runs, args.cold_runs) + 1, args.seed)
    if args.warm_worker:
        print(json.dumps(warm(args.index, args.warm_worker[0], qs, int(args.warm_worker[1]))))
        return
    results, rows = [], []
    ragmed = [sys.executable, "-m", "ragmed"]  # this interpreter's ragmed (a copied venv's script may point elsewhere)
    import resource

    tree_cpu = become_subreaper()
    with tempfile.TemporaryDirectory(prefix="ragmed-bench-ask-") as tmp:
        for name, params in parse_generators(args.generators):
            yml = pipeline_yaml(args.index, name, params, Path(tmp))
            cold, cold_cpu, errors = [], [], []
            load_before = os.getloadavg()[0]
            for image, q in qs[:args.cold_runs]:
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t = time.perf_counter()
                p = subprocess.run([*ragmed, "ask", image, q, "--index", args.index, "--pipeline", str(yml), "--json"],
                                   capture_output=True, text=True)
                cold.append(time.perf_counter() - t)
                reap_descendants()
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cold_cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
                if p.returncode != 0:
                    errors.append(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}")
            p = subprocess.run([sys.executable, __file__, "--index", args.index, "--data", args.data, "--images",
                                args.images, "--seed", str(args.seed), "--warm-runs", str(args.warm_runs),
                                "--warm-worker", str(yml), str(args.warm_runs)], capture_output=True, text=True)
            if p.returncode != 0:
                errors.append(p.stderr.strip().splitlines()[-1])
                w = {}
            else:
                w = json.loads(p.stdout.strip().splitlines()[-1])
            r = {"generator": name, "params": params, "cold": percentiles(cold), "cold_runs_s": cold,
                 "cold_cpu_s": cold_cpu, "cold_cpu_counts_descendants": tree_cpu,
                 "load_avg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)], "errors": errors[:3], **w}
            results.append(r)
            rows.append({"generator": name, "cold_p50_s": r["cold"]["p50_ms"] / 1000,
                         "cold_cpu_p50_s": float(sorted(cold_cpu)[len(cold_cpu) // 2]) if cold_cpu else None,
                         "first_ask_s": w.get("first_ask_s"), "warm_p50_ms": w.get("warm", {}).get("p50_ms"),
                         "warm_p95_ms": w.get("warm", {}).get("p95_ms"), "errors": len(errors)})
    print(table(rows))
    write_result(args.out, {"index": args.index, "results": results, "table": rows,
                            "note": "cold = a fresh `ragmed ask --json` process, start to exit (imports, model loads, "
                                    "one answer); warm = Pipeline.ask after one answer in the same process; the "
                                    "question's own image is excluded from retrieval"})


def warm(index: str, yml: str, qs: list[tuple[str, str]], n: int) -> dict:
    from ragmed.io import load_image
    from ragmed.pipeline import Pipeline

    t = time.perf_counter()
    p = Pipeline.from_yaml(yml, index=index)
    image, q = qs[-1]
    img = load_image(image)
    p.ask(img, q, exclude_hashes={img.content_hash})
    first = time.perf_counter() - t
    samples, stages = [], {}
    for image, q in qs[:n]:
        t = time.perf_counter()
        img = load_image(image)
        ans = p.ask(img, q, exclude_hashes={img.content_hash})
        samples.append(time.perf_counter() - t)
        for k, v in ans.timings.items():
            stages.setdefault(k, []).append(v)
    import numpy as np

    return {"first_ask_s": first, "warm": percentiles(samples),
            "warm_stage_p50_ms": {k: float(np.median(v) * 1000) for k, v in stages.items()},
            "models": ans.models}


if __name__ == "__main__":
    main()
