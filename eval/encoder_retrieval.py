"""Image→image precision@5 and question→image recall@10 for the ragmed-default image encoder vs baselines.

Sets (from ../shared/data):
  - VQA-RAD by ``image_organ``: the evaluation half of the images (``vqa_rad_split``, seed 0, split by image);
  - brain-tumor-mri by class: the ``Testing`` split, exact duplicates (same md5 in labels.csv) reduced to one copy;
  - ham10000-subset by ``dx``: neighbours sharing the query's ``lesion_id`` are left out.
A hit is a top-5 neighbour with the query's label; the query itself and its duplicates are left out.
Encoders: random vectors (seed 0), the classic descriptor (``classic``), the *holdout* encoder (trained by
``eval/train_default_encoder.py --holdout-vqa-rad``: the shipped recipe minus the VQA-RAD evaluation images; it never
saw brain-tumor-mri or HAM10000 at all), and the shipped encoder (which did see the VQA-RAD evaluation images, so its
VQA-RAD numbers are not held out).
Question→image recall@10: every VQA-RAD question about an evaluation-half image, embedded with MiniLM, searched
against the evaluation-half images; a hit when its own image is in the top 10.

    python eval/encoder_retrieval.py --holdout /tmp/ragmed-enc-holdout [--shipped DIR] [--out eval/results/encoder_retrieval.json]
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "eval"))
from train_default_encoder import DATA, vqa_rad_split  # noqa: E402


def load_sets(limit: int | None = None) -> dict[str, dict]:
    sets: dict[str, dict] = {}
    qa = json.loads((DATA / "vqa-rad" / "train.json").read_text())
    organ = {r["image_name"]: r["image_organ"] for r in qa}
    _, ev = vqa_rad_split()
    names = sorted(n for n in ev if n in organ)
    sets["vqa-rad/image_organ"] = {"paths": [DATA / "vqa-rad" / "images" / n for n in names],
                                   "labels": [organ[n] for n in names], "groups": names,
                                   "note": "evaluation half of the VQA-RAD images (vqa_rad_split seed 0)"}
    root = DATA / "images" / "brain-tumor-mri"
    seen, paths, labels, groups = set(), [], [], []
    with open(root / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["split"] != "Testing" or r["md5"] in seen:
                continue
            seen.add(r["md5"])
            paths.append(root / r["file"]), labels.append(r["label"]), groups.append(r["md5"])
    sets["brain-tumor-mri/class"] = {"paths": paths, "labels": labels, "groups": groups,
                                     "note": "Testing split, one copy per md5 (exact duplicates removed)"}
    root = DATA / "images" / "ham10000-subset"
    paths, labels, groups = [], [], []
    with open(root / "metadata.csv", newline="") as f:
        for r in csv.DictReader(f):
            paths.append(root / r["file"]), labels.append(r["dx"]), groups.append(r["lesion_id"])
    sets["ham10000-subset/dx"] = {"paths": paths, "labels": labels, "groups": groups,
                                  "note": "all 1,487 images; neighbours with the query's lesion_id left out"}
    if limit:
        for s in sets.values():
            for k in ("paths", "labels", "groups"):
                s[k] = s[k][:limit]
    return sets


def featurise(paths, size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Decode each image once: classic descriptor + letterboxed (size px) array for the learned encoders."""
    from ragmed.encoders.classic import ClassicDescriptor
    from ragmed.encoders.tower import letterbox_uint8
    from ragmed.io import load_image

    classic = ClassicDescriptor()

    def one(p):
        im = load_image(p)
        return classic.describe(im.to_gray()), letterbox_uint8(im.pixels, size)

    t = time.perf_counter()
    cache = os.environ.get("RAGMED_EVAL_CACHE")
    if cache:
        key = hashlib.sha256(json.dumps([str(p) for p in paths] + [size]).encode()).hexdigest()[:16]
        f = Path(cache) / f"feat-{key}.npz"
        if f.exists():
            z = np.load(f)
            return z["classic"], z["arrays"], float(z["seconds"])
    with ThreadPoolExecutor(max_workers=2) as pool:
        res = list(pool.map(one, paths))
    c, arr, sec = np.stack([r[0] for r in res]), np.stack([r[1] for r in res]), time.perf_counter() - t
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
        np.savez(f, classic=c, arrays=arr, seconds=sec)
    return c, arr, sec


def precision_at_k(vecs: np.ndarray, labels, groups, k: int = 5) -> float:
    from ragmed.encoders.base import l2_normalise

    v = l2_normalise(vecs)
    sims = v @ v.T
    lab = np.asarray(labels)
    grp = np.asarray(groups)
    sims[grp[:, None] == grp[None, :]] = -np.inf  # the query itself and its duplicates / same lesion
    top = np.argsort(-sims, axis=1)[:, :k]
    return float((lab[top] == lab[:, None]).mean())


def encode_arrays(model_dir: Path, arrays: np.ndarray) -> np.ndarray:
    from ragmed.encoders import create_encoder

    enc = create_encoder("ragmed-default", path=str(model_dir))
    out = [enc.encode_arrays(arrays[i:i + 128]) for i in range(0, len(arrays), 128)]
    return np.concatenate(out)


def main(argv=None) -> int:
    from ragmed.encoders import create_encoder
    from ragmed.encoders.base import l2_normalise
    from ragmed.encoders.default import shipped_path

    ap = argparse.ArgumentParser()
    ap.add_argument("--holdout", required=True, help="model dir from train_default_encoder.py --holdout-vqa-rad")
    ap.add_argument("--shipped", default=str(shipped_path()))
    ap.add_argument("--extra", action="append", default=[], help="NAME=DIR: more encoders to score (ablations)")
    ap.add_argument("--out", default=str(REPO / "eval" / "results" / "encoder_retrieval.json"))
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args(argv)

    encoders = {"holdout": Path(a.holdout), "shipped": Path(a.shipped)}
    for e in a.extra:
        name, d = e.split("=", 1)
        encoders[name] = Path(d)
    infos = {}
    for name, d in encoders.items():
        cfg = json.loads((d / "config.json").read_text())
        tr = cfg.get("training", {})
        tc = tr.get("config", {})
        infos[name] = {"id": cfg["id"], "trained_on": cfg.get("trained_on"), "command": cfg.get("command"),
                       "train_seconds": tr.get("seconds"), "steps": tr.get("steps"),
                       "batch_size": tc.get("batch_size"), "ssl_weight": tc.get("ssl_weight"),
                       "aug_strength": tc.get("aug_strength", 1.0), "tower": cfg.get("tower"),
                       "final_loss": (tr.get("history") or [{}])[-1].get("loss")}
    size = json.loads((encoders["holdout"] / "preprocess.json").read_text())["size"]
    results: dict = {"precision_at_5": {}, "question_to_image_recall_at_10": {}}
    rng = np.random.default_rng(0)
    for set_name, s in load_sets(a.limit).items():
        classic_vecs, arrays, t_dec = featurise(s["paths"], size)
        row = {"n": len(s["paths"]), "note": s["note"], "decode_seconds": round(t_dec, 1),
               "label_counts": {k: int(v) for k, v in zip(*np.unique(s["labels"], return_counts=True))}}
        row["random"] = precision_at_k(rng.standard_normal((len(arrays), 384)).astype(np.float32), s["labels"], s["groups"])
        row["classic"] = precision_at_k(classic_vecs, s["labels"], s["groups"])
        for name, d in encoders.items():
            row[name] = precision_at_k(encode_arrays(d, arrays), s["labels"], s["groups"])
        results["precision_at_5"][set_name] = row
        print(set_name, json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                                    if k not in ("label_counts", "note")}), file=sys.stderr)
        if set_name.startswith("vqa-rad"):
            vqa_arrays, vqa_names = arrays, s["groups"]

    qa = json.loads((DATA / "vqa-rad" / "train.json").read_text())
    pos = {n: i for i, n in enumerate(vqa_names)}
    qs = [(r["question"], pos[r["image_name"]]) for r in qa if r["image_name"] in pos]
    text = create_encoder("minilm")
    qv = text.encode_texts([q for q, _ in qs])
    target = np.array([i for _, i in qs])

    def recall(img_vecs):
        sims = qv @ l2_normalise(img_vecs).T
        top = np.argsort(-sims, axis=1)[:, :10]
        return float((top == target[:, None]).any(axis=1).mean())

    rec = {"n_questions": len(qs), "n_images": len(vqa_names),
           "random": recall(rng.standard_normal((len(vqa_names), 384)).astype(np.float32)),
           "classic": None, "note": "classic lives in its own space: no text→image search"}
    for name, d in encoders.items():
        rec[name] = recall(encode_arrays(d, vqa_arrays))
    results["question_to_image_recall_at_10"]["vqa-rad"] = rec
    print("q→image R@10", json.dumps({k: v for k, v in rec.items() if k != "note"}), file=sys.stderr)
    results["encoders"] = infos
    results["command"] = "python eval/encoder_retrieval.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    results["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
