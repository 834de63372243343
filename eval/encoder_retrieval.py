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

``--fit`` adds ``holdout+fit`` (and ``shipped+fit`` outside VQA-RAD): the encoder fitted to each set's own corpus by ``fit_to_corpus`` (what
``index.fit_image_encoder`` runs at build time), never on the scored images: VQA-RAD's training half with its
question–answer text; brain-tumor-mri's Training images without labels (none a copy of a Testing image); for
HAM10000, the images of a random half of the lesions without labels or ``templated_text``, scoring the other half
(``ham10000-subset/dx, scored half``, where every encoder is scored side by side).

``--dev`` scores development sets instead (recipes are chosen there, never on brain-tumor-mri or HAM10000).

    python eval/encoder_retrieval.py --holdout /tmp/ragmed-enc-holdout [--fit] [--shipped DIR] [--out eval/results/encoder_retrieval.json]
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
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
    brain_fit, fit_seen = [], set(seen)  # the fitting corpus: Training images, none a copy of a Testing image
    with open(root / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["split"] == "Training" and r["md5"] not in fit_seen:
                fit_seen.add(r["md5"])
                brain_fit.append(root / r["file"])
    root = DATA / "images" / "ham10000-subset"
    paths, labels, groups = [], [], []
    with open(root / "metadata.csv", newline="") as f:
        for r in csv.DictReader(f):
            paths.append(root / r["file"]), labels.append(r["dx"]), groups.append(r["lesion_id"])
    sets["ham10000-subset/dx"] = {"paths": paths, "labels": labels, "groups": groups,
                                  "note": "all 1,487 images; neighbours with the query's lesion_id left out"}
    # For corpus fitting: half of the lesions (seed 0) are the corpus the encoder is fitted on (images only, never
    # templated_text), the other half is scored; every encoder is scored on that half side by side.
    lesions = sorted(set(groups))
    fit_lesions = {lesions[i] for i in np.random.default_rng(0).permutation(len(lesions))[: len(lesions) // 2]}
    half = [i for i, g in enumerate(groups) if g not in fit_lesions]
    sets["ham10000-subset/dx, scored half"] = {
        "paths": [paths[i] for i in half], "labels": [labels[i] for i in half], "groups": [groups[i] for i in half],
        "fit_paths": [p for p, g in zip(paths, groups) if g in fit_lesions],
        "note": "the images of a random half of the lesions (seed 0); the other half is the fitting corpus"}
    sets["vqa-rad/image_organ"]["fit"] = "vqa-rad-train-half"
    sets["brain-tumor-mri/class"]["fit_paths"] = brain_fit
    return _limit(sets, limit)


def load_dev_sets(limit: int | None = None) -> dict[str, dict]:
    """Development sets for choosing a training recipe, so that recipes are never chosen on brain-tumor-mri or
    HAM10000 (the test sets above): VQA-RAD's evaluation half by organ, the test splits of PneumoniaMNIST and
    BreastMNIST by label (the training recipe uses only their train+val splits), the CC BY-NC POCUS rows by label
    (never trained on) and LC25000 lung histopathology by class (never trained on; augmented near-duplicates)."""
    sets = {"vqa-rad/image_organ": load_sets()["vqa-rad/image_organ"]}
    for name, npz in (("pneumoniamnist/label", DATA / "images" / "pneumoniamnist.npz"),
                      ("breastmnist/label", DATA / "images" / "breastmnist" / "breastmnist.npz")):
        d = np.load(npz)
        imgs, labels = d["test_images"], d["test_labels"].reshape(-1)
        sets[name] = {"paths": list(imgs), "labels": [str(x) for x in labels], "groups": list(range(len(imgs))),
                      "note": "test split (28 px), never trained on"}
    root = DATA / "images" / "pocus-lus"
    paths, labels = [], []
    with open(root / "metadata.csv", newline="") as f:
        for r in csv.DictReader(f):
            if "NC" in r["license"].replace(" ", ""):
                paths.append(root / r["file"]), labels.append(r["label"])
    sets["pocus-lus-nc/label"] = {"paths": paths, "labels": labels, "groups": [str(p) for p in paths],
                                  "note": "the CC BY-NC rows (never trained on)"}
    root = DATA / "images" / "lc25000-lung"
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    sets["lc25000-lung/class"] = {"paths": [root / r["file"] for r in rows], "labels": [r["label"] for r in rows],
                                  "groups": [r["file"] for r in rows], "note": "all 750 images (never trained on)"}
    return _limit(sets, limit)


def _limit(sets: dict[str, dict], limit: int | None) -> dict[str, dict]:
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
        if isinstance(p, np.ndarray):  # an 8-bit grayscale array (the MedMNIST sets)
            px = p.astype(np.float32) / 255.0
            return classic.describe(px), letterbox_uint8(px, size)
        im = load_image(p)
        return classic.describe(im.to_gray()), letterbox_uint8(im.pixels, size)

    t = time.perf_counter()
    cache = os.environ.get("RAGMED_EVAL_CACHE")
    if cache:
        key = hashlib.sha256(json.dumps([hashlib.sha256(p.tobytes()).hexdigest() if isinstance(p, np.ndarray)
                                         else str(p) for p in paths] + [size]).encode()).hexdigest()[:16]
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
    return float(per_query_precision(vecs, labels, groups, k).mean())


def diff_ci(a: np.ndarray, b: np.ndarray, groups, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95 % bootstrap interval of mean(a − b) over queries, resampling whole groups (a lesion's images together)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    _, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    sums, counts = np.bincount(inv, weights=d), np.bincount(inv).astype(np.float64)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    means = sums[pick].sum(1) / counts[pick].sum(1)
    return [round(float(x), 4) for x in np.percentile(means, [2.5, 97.5])]


def per_query_precision(vecs: np.ndarray, labels, groups, k: int = 5) -> np.ndarray:
    from ragmed.encoders.base import l2_normalise

    v = l2_normalise(vecs)
    sims = v @ v.T
    lab = np.asarray(labels)
    grp = np.asarray(groups)
    sims[grp[:, None] == grp[None, :]] = -np.inf  # the query itself and its duplicates / same lesion
    top = np.argsort(-sims, axis=1)[:, :k]
    return (lab[top] == lab[:, None]).mean(axis=1)


def encode_arrays(model_dir: Path, arrays: np.ndarray) -> np.ndarray:
    from ragmed.encoders import create_encoder

    enc = create_encoder("ragmed-default", path=str(model_dir))
    out = [enc.encode_arrays(arrays[i:i + 128]) for i in range(0, len(arrays), 128)]
    return np.concatenate(out)


def fit_corpus(s: dict):
    """The corpus a set's encoder is fitted on (never its scored images): images only (no labels, no text), except
    VQA-RAD, whose training half is fitted with its question–answer text, as an image–report corpus would be."""
    from ragmed.corpus import Case, Corpus, read_corpus

    if s.get("fit") == "vqa-rad-train-half":
        c = read_corpus(DATA / "vqa-rad" / "train.json", format="vqa-rad", images=DATA / "vqa-rad" / "images")
        scored = set(s["groups"])
        c.cases = [k for k in c.cases if Path(k.images[0]).name not in scored]
        return c
    if "fit_paths" in s:
        return Corpus(source="fit-images", root=Path("/"),
                      cases=[Case(id=f"img{i}", images=[str(p)]) for i, p in enumerate(s["fit_paths"])])
    return None


def fitted_dir(base: Path, set_name: str, s: dict, work: Path) -> Path | None:
    """``ragmed.encoders.fit_to_corpus`` (what ``index.fit_image_encoder`` runs) from ``base`` on the set's
    fitting corpus; cached in ``work``."""
    from ragmed.encoders import create_encoder, fit_to_corpus

    corpus = fit_corpus(s)
    if corpus is None:
        return None
    t = time.perf_counter()
    enc = fit_to_corpus(create_encoder("ragmed-default", path=str(base)), corpus, create_encoder("minilm"),
                        work_dir=work / set_name.replace("/", "_").replace(" ", "").replace(",", "_"), progress=False)
    print(f"fitted {set_name} on {len(corpus.cases)} cases in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    return Path(enc.path)


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
    ap.add_argument("--fit", action="store_true",
                    help="also score the holdout encoder fitted to each set's own fitting corpus (fit_to_corpus)")
    ap.add_argument("--fit-dir", default="/tmp/ragmed-encoder-fit", help="where fitted encoders are kept")
    ap.add_argument("--dev", action="store_true",
                    help="score the development sets (for choosing a recipe) instead of the test sets")
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
    fitted_dirs: dict[str, Path] = {}
    for set_name, s in (load_dev_sets if a.dev else load_sets)(a.limit).items():
        classic_vecs, arrays, t_dec = featurise(s["paths"], size)
        row = {"n": len(s["paths"]), "note": s["note"], "decode_seconds": round(t_dec, 1),
               "label_counts": {k: int(v) for k, v in zip(*np.unique(s["labels"], return_counts=True))}}
        row["random"] = precision_at_k(rng.standard_normal((len(arrays), 384)).astype(np.float32), s["labels"], s["groups"])
        classic_q = per_query_precision(classic_vecs, s["labels"], s["groups"])
        row["classic"] = float(classic_q.mean())
        row["ci95_minus_classic"] = {}

        def score(name, d):
            q = per_query_precision(encode_arrays(d, arrays), s["labels"], s["groups"])
            row[name] = float(q.mean())
            row["ci95_minus_classic"][name] = diff_ci(q, classic_q, s["groups"])

        for name, d in encoders.items():
            score(name, d)
        if a.fit and not a.dev:
            fd = fitted_dir(encoders["holdout"], set_name, s, Path(a.fit_dir) / "holdout")
            if fd is not None:
                score("holdout+fit", fd)
                fit_cfg = json.loads((fd / "config.json").read_text())
                row["fit"] = {**fit_cfg["fit"], "training": fit_cfg["training"]["data"]}
                fitted_dirs[set_name] = fd
            if not set_name.startswith("vqa-rad"):  # the shipped tower saw VQA-RAD's scored images
                fd_s = fitted_dir(encoders["shipped"], set_name, s, Path(a.fit_dir) / "shipped")
                if fd_s is not None:
                    score("shipped+fit", fd_s)
        results["precision_at_5"][set_name] = row
        print(set_name, json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                                    if k not in ("label_counts", "note", "fit", "ci95_minus_classic")}), file=sys.stderr)
        print("  95% CI of (encoder - classic):", json.dumps(row["ci95_minus_classic"]), file=sys.stderr)
        if set_name.startswith("vqa-rad"):
            vqa_arrays, vqa_names = arrays, s["groups"]
    if a.dev:
        results["precision_at_5"]["mean"] = {
            k: float(np.mean([r[k] for r in results["precision_at_5"].values()]))
            for k in ["random", "classic", *encoders]}
        print("mean", json.dumps({k: round(v, 3) for k, v in results["precision_at_5"]["mean"].items()}), file=sys.stderr)

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
    if "vqa-rad/image_organ" in fitted_dirs:
        rec["holdout+fit"] = recall(encode_arrays(fitted_dirs["vqa-rad/image_organ"], vqa_arrays))
    results["question_to_image_recall_at_10"]["vqa-rad"] = rec
    print("q→image R@10", json.dumps({k: v for k, v in rec.items() if k != "note"}), file=sys.stderr)
    from ragmed.eval.bench import write_result

    results["encoders"] = infos
    out = Path(a.out)
    print(f"wrote {write_result(out.stem, results, out.parent)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
