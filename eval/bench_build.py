"""Index build speed and memory: cases/s, peak memory, decode vs encode split, growth with corpus size.

Corpus: a CSV manifest of N cases, each one real VQA-RAD image (cycled) with one real IU X-ray report (cycled), ids
unique, written under a temporary directory (the shared data is only referenced, never copied). Each size is built
with the pipeline's own ``build_index`` in a fresh process, so peak RSS (ru_maxrss) is that build's alone.

    python eval/bench_build.py --sizes 300,3000           # 1x and 10x
    python eval/bench_build.py --sizes 300 --pipeline default --out bench_build_smoke

Timings come from ``BuildReport.timings``: ``decode`` is the time the encoder waited for decoded images (decoding
runs in a thread pool one batch ahead, so decode work that overlaps encoding is not counted there), ``encode_image``
and ``encode_text`` the encoders, ``write`` the SQLite + vector-part commits, ``finalize`` the FAISS build and
calibration.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from ragmed.eval.bench import peak_rss_mb, table, write_result  # noqa: E402

DATA = Path(os.environ.get("RAGMED_DATA", REPO.parent / "shared" / "data"))


def write_corpus(n: int, out: Path) -> Path:
    images = sorted((DATA / "vqa-rad/images").glob("*.jpg"))
    if not images:
        sys.exit(f"no VQA-RAD images under {DATA / 'vqa-rad/images'} (set RAGMED_DATA)")
    with (DATA / "reports/iu-xray/indiana_reports.csv").open(encoding="utf-8") as f:
        reports = [(r.get("findings") or "") + " " + (r.get("impression") or "") for r in csv.DictReader(f)]
    reports = [r.strip() for r in reports if len(r.strip()) > 20]
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / f"corpus_{n}.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "report"])
        for i in range(n):
            w.writerow([f"case-{i:06d}", str(images[i % len(images)]), reports[i % len(reports)]])
    return manifest


class PlumbingHashTextEncoder:
    """NOT a model: a bag of hashed words (crc32 → 384 buckets, L2-normalised), for measuring the build's memory at
    sizes where MiniLM would take hours on a shared 2-core machine. It claims MiniLM's space so that the build takes
    the same paths (the image tower is fitted to it as to MiniLM); its own memory is a few arrays per batch, where
    MiniLM's is its weights plus one batch's activations, both independent of the corpus size."""

    def __init__(self, dim: int = 384):
        from ragmed.encoders.text import DEFAULT_TEXT_SPACE

        self.dim, self.id, self.space, self.batch_size = dim, f"plumbing-hash-text-{dim}", DEFAULT_TEXT_SPACE, 64

    def encode_texts(self, texts) -> "np.ndarray":
        import zlib

        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        out[:, 0] += 1e-3  # never a zero vector
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def build_one(manifest: str, out: str, pipeline: str | None, fit_steps: int | None = None,
              text_encoder: str | None = None) -> dict:
    from ragmed.config import load_pipeline
    from ragmed.corpus import read_corpus
    from ragmed.pipeline.build import build_from_config

    from ragmed.encoders import create_encoder

    t0 = time.perf_counter()
    cfg = load_pipeline(pipeline)
    if fit_steps is not None:  # a shorter fit (same sample, so the same memory): for a loaded machine
        cfg.index.fit_min_steps = cfg.index.fit_max_steps = int(fit_steps)
    corpus = read_corpus(manifest)
    t_read = time.perf_counter() - t0
    t = time.perf_counter()  # load the models first, so that encode timings are per-case work only
    te = (PlumbingHashTextEncoder() if text_encoder == "plumbing-hash" else
          create_encoder(cfg.encoders.text.name, role="text", **cfg.encoders.text.params))
    ie = (create_encoder(cfg.encoders.image.name, role="image", **cfg.encoders.image.params)
          if cfg.encoders.image is not None else None)
    te.encode_texts(["warm up"])
    for enc in (te, ie):
        if enc is not None and hasattr(enc, "warm_up"):
            enc.warm_up()
    t_models = time.perf_counter() - t
    rep = build_from_config(corpus, out, cfg, progress=False, text_encoder=te, image_encoder=ie)
    total = time.perf_counter() - t0
    return {"n_cases": rep.n_cases, "n_images": rep.n_images, "skipped": len(rep.skipped), "build_s": rep.seconds,
            "total_s": total, "read_corpus_s": t_read, "load_models_s": t_models, "cases_per_s": rep.n_cases / rep.seconds,
            "timings": rep.timings, "peak_rss_mb": peak_rss_mb(), "pipeline": cfg.name,
            "encoders": {"text": te.id, "image": cfg.encoders.image.name if cfg.encoders.image else None},
            "batch_size": cfg.index.batch_size, "decode_workers": cfg.index.decode_workers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="300,3000")
    ap.add_argument("--pipeline", default=None)
    ap.add_argument("--tmp", default=None, help="where corpora and indexes are written (deleted afterwards)")
    ap.add_argument("--out", default="bench_build")
    ap.add_argument("--fit-steps", type=int, default=None,
                    help="fit the image tower for exactly this many batches (default: as the pipeline says); the fit "
                         "sample, so its memory, is unchanged")
    ap.add_argument("--parallel", action="store_true",
                    help="build all sizes at once (each in its own process, so each peak RSS is still its own build's; "
                         "timings then share the CPUs)")
    ap.add_argument("--text-encoder", choices=("pipeline", "plumbing-hash"), default="pipeline",
                    help="plumbing-hash: a hashed bag of words instead of the pipeline's text model (NOT a model; for "
                         "memory growth at sizes where the text model would take hours here)")
    ap.add_argument("--worker", nargs=2, metavar=("MANIFEST", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        print(json.dumps(build_one(args.worker[0], args.worker[1], args.pipeline, args.fit_steps,
                                   args.text_encoder)))
        return
    rows, results = [], []
    if args.tmp:
        Path(args.tmp).mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ragmed-bench-build-", dir=args.tmp) as tmp:
        def start(n: int) -> subprocess.Popen:
            manifest = write_corpus(n, Path(tmp))
            cmd = [sys.executable, __file__, "--worker", str(manifest), str(Path(tmp) / f"idx_{n}")]
            if args.pipeline:
                cmd += ["--pipeline", args.pipeline]
            if args.fit_steps is not None:
                cmd += ["--fit-steps", str(args.fit_steps)]
            cmd += ["--text-encoder", args.text_encoder]
            print(f"--- building {n} cases", file=sys.stderr, flush=True)
            err = (Path(tmp) / f"build_{n}.err").open("w+")  # a file, not a pipe: a full pipe would block a worker
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)

        sizes = [int(x) for x in args.sizes.split(",")]
        started = {n: start(n) for n in sizes} if args.parallel else {}
        for n in sizes:
            proc = started.get(n) or start(n)
            out, _ = proc.communicate()
            if proc.returncode != 0:
                sys.exit(f"build of {n} cases failed:\n{(Path(tmp) / f'build_{n}.err').read_text()[-3000:]}")
            r = json.loads(out.strip().splitlines()[-1])
            results.append(r)
            t = r["timings"]
            rows.append({"cases": r["n_cases"], "cases/s": r["cases_per_s"], "build_s": r["build_s"],
                         "decode_wait_s": t.get("decode"), "enc_image_s": t.get("encode_image"),
                         "enc_text_s": t.get("encode_text"), "write_s": t.get("write"), "finalize_s": t.get("finalize"),
                         "peak_rss_mb": r["peak_rss_mb"]})
            print(table(rows[-1:]), file=sys.stderr, flush=True)
    print(table(rows))
    growth = {}
    if len(results) >= 2:
        a, b = results[0], results[-1]
        growth = {"size_ratio": b["n_cases"] / a["n_cases"], "time_ratio": b["build_s"] / a["build_s"],
                  "peak_rss_ratio": b["peak_rss_mb"] / a["peak_rss_mb"],
                  "peak_rss_delta_mb": b["peak_rss_mb"] - a["peak_rss_mb"]}
        print("growth " + ", ".join(f"{k}={v:.3g}" for k, v in growth.items()))
    write_result(args.out, {"parallel": bool(args.parallel), "results": results, "table": rows, "growth": growth,
                            "load_avg_1_5_15": {"start": list(load_start), "end": list(os.getloadavg())},
                            "text_encoder": args.text_encoder,
                            "corpus": "N cases: VQA-RAD images cycled + IU X-ray reports cycled (unique ids)"})


if __name__ == "__main__":
    main()
