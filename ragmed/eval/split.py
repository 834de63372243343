"""Split a VQA set by image (no image on both sides), for index-vs-evaluation experiments.

    python -m ragmed.eval.split ../shared/data/vqa-rad/train.json --out /tmp/vqarad-split --seed 0 --index-fraction 0.8

writes ``index.json`` (the questions of 80% of the images: build the index from it) and ``eval.json`` (the questions
of the other images: evaluate on it), same format as the input, plus ``split.json`` (which images went where).
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from ragmed.corpus.vqa import load_json, detect_vqa_format


def split_by_image(data: str | Path, out: str | Path, *, seed: int = 0, index_fraction: float = 0.8) -> dict:
    p = Path(data)
    rows = load_json(p)
    fmt = detect_vqa_format(p, rows)
    key = "image_name" if fmt == "vqa-rad" else "img_name"
    images = sorted({str(r[key]) for r in rows})
    rng = random.Random(seed)
    rng.shuffle(images)
    n_index = int(round(index_fraction * len(images)))
    index_images = set(images[:n_index])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    idx_rows = [r for r in rows if str(r[key]) in index_images]
    eval_rows = [r for r in rows if str(r[key]) not in index_images]
    (out / "index.json").write_text(json.dumps(idx_rows))
    (out / "eval.json").write_text(json.dumps(eval_rows))
    info = {"source": str(p), "format": fmt, "seed": seed, "index_fraction": index_fraction,
            "index_images": sorted(index_images), "eval_images": sorted(set(images) - index_images),
            "n_index_questions": len(idx_rows), "n_eval_questions": len(eval_rows)}
    (out / "split.json").write_text(json.dumps(info, indent=1))
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--index-fraction", type=float, default=0.8)
    a = ap.parse_args()
    info = split_by_image(a.data, a.out, seed=a.seed, index_fraction=a.index_fraction)
    print(f"{len(info['index_images'])} index images ({info['n_index_questions']} questions), "
          f"{len(info['eval_images'])} eval images ({info['n_eval_questions']} questions) -> {a.out}")


if __name__ == "__main__":
    main()
