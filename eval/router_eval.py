"""Domain-router accuracy per domain on images it was not fitted on, and refusal of non-medical images.

    python eval/router_eval.py [--image-encoder classic] [--fit-per-domain 60] [--eval-per-source 40]

1. A multi-domain corpus from every image domain in ../shared/data (nothing copied into the repository; the 28×28
   MedMNIST arrays are written as PNGs under --work):
     chest-xray  PneumoniaMNIST (train split) + VQA-RAD chest images whose own Q/A say X-ray
     ct          VQA-RAD images whose own Q/A say CT
     mri         brain-tumor-mri (Training) + VQA-RAD images whose own Q/A say MRI
     ultrasound  POCUS lung ultrasound + BreastMNIST (train split)
     pathology   LC25000 lung histopathology
     dermatology HAM10000 subset
     microscopy  BCCD blood smears
   Each source is split by file (seed 0) into a fit part and an evaluation part (brain-tumor-mri: Training vs
   Testing, files with an exact copy in the other split dropped; MedMNIST: train vs test split). The index is built
   with pipelines/multidomain.yaml (cases placed in their domain sub-index by label); ``post_build`` fits the router's
   classifier on at most --fit-per-domain images per domain.
2. Held-out images (at most --eval-per-source per source) are routed: accuracy per domain and per source, with
   refusals and below-threshold ("search every domain") decisions counted separately.
3. DICOM files (NEMA WG04 J2KI set, pydicom's CT/MR samples, the real series) route by their tags.
4. Non-medical images generated here (random noise, blank frames, rendered text documents, natural-photo-like
   synthetic scenes; --n-nonmedical of each, different seeds) must be refused.
Writes eval/results/router_eval.json (or --out).
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def vqa_rad_modalities(train_json: Path) -> dict[str, str]:
    """Image → modality where the image's own questions and answers say it (CT / MRI / X-ray), else absent."""
    lab: dict[str, set] = defaultdict(set)
    for x in json.loads(train_json.read_text()):
        q, a = str(x["question"]).lower(), str(x["answer"]).lower().strip()
        ws = set(re.findall(r"[a-z0-9\-]+", q))
        if a == "yes":
            if "ct" in ws:
                lab[x["image_name"]].add("ct")
            if ws & {"mri", "mr", "t1", "t2", "flair"}:
                lab[x["image_name"]].add("mri")
            if ws & {"x-ray", "xray", "radiograph", "film"}:
                lab[x["image_name"]].add("xray")
        if any(w in q for w in ("modality", "imaging", "type of image", "kind of image")):
            if re.search(r"\bct\b", a):
                lab[x["image_name"]].add("ct")
            if re.search(r"\bmr|flair|t1|t2", a):
                lab[x["image_name"]].add("mri")
            if re.search(r"x-?\s?ray|radiograph|cxr", a):
                lab[x["image_name"]].add("xray")
    organ = {x["image_name"]: x["image_organ"] for x in json.loads(train_json.read_text())}
    out = {}
    for img, mods in lab.items():
        if len(mods) == 1:
            m = next(iter(mods))
            out[img] = "chest-xray" if m == "xray" and organ.get(img) == "CHEST" else m
    return {k: v for k, v in out.items() if v in ("chest-xray", "ct", "mri")}


def npz_pngs(npz: Path, split: str, out: Path, n: int, seed: int) -> list[Path]:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    with np.load(npz) as z:
        imgs = z[f"{split}_images"]
    idx = np.random.default_rng(seed).permutation(len(imgs))[:n]
    paths = []
    for i in idx:
        p = out / f"{split}-{i}.png"
        if not p.exists():
            Image.fromarray(imgs[i]).save(p)
        paths.append(p)
    return paths


def sources(data: Path, work: Path, n_fit: int, n_eval: int, seed: int) -> dict[str, dict[str, list[Path]]]:
    """source name -> {"domain", "fit": [...], "eval": [...]}"""
    rng = random.Random(seed)

    def split_files(files, n_fit_, n_eval_):
        files = sorted(files)
        rng.shuffle(files)
        k = min(n_fit_, len(files) // 2) if len(files) < n_fit_ + n_eval_ else n_fit_
        return files[:k], files[k:k + n_eval_]

    out: dict[str, dict] = {}
    im = data / "images"
    vqa = vqa_rad_modalities(data / "vqa-rad" / "train.json")
    for dom in ("chest-xray", "ct", "mri"):
        files = [data / "vqa-rad" / "images" / k for k, v in vqa.items() if v == dom]
        f, e = split_files(files, n_fit, n_eval)
        out[f"vqa-rad-{dom}"] = {"domain": dom, "fit": f, "eval": e}
    out["pneumoniamnist"] = {"domain": "chest-xray",
                             "fit": npz_pngs(im / "pneumoniamnist.npz", "train", work / "png/pneumonia", n_fit, seed),
                             "eval": npz_pngs(im / "pneumoniamnist.npz", "test", work / "png/pneumonia", n_eval, seed)}
    labels = list(csv.DictReader(open(im / "brain-tumor-mri" / "labels.csv")))
    tr = [im / "brain-tumor-mri" / r["file"] for r in labels if r["split"] == "Training" and r["copy_in_other_split"] == "0"]
    te = [im / "brain-tumor-mri" / r["file"] for r in labels if r["split"] == "Testing" and r["copy_in_other_split"] == "0"]
    rng.shuffle(tr)
    rng.shuffle(te)
    out["brain-tumor-mri"] = {"domain": "mri", "fit": tr[:n_fit], "eval": te[:n_eval]}
    f, e = split_files(list((im / "pocus-lus").glob("*/*.jpg")), n_fit, n_eval)
    out["pocus-lus"] = {"domain": "ultrasound", "fit": f, "eval": e}
    out["breastmnist"] = {"domain": "ultrasound",
                          "fit": npz_pngs(im / "breastmnist" / "breastmnist.npz", "train", work / "png/breast", n_fit, seed),
                          "eval": npz_pngs(im / "breastmnist" / "breastmnist.npz", "test", work / "png/breast", n_eval, seed)}
    for name, dom, pattern in (("lc25000-lung", "pathology", "lc25000-lung/lung_*/*.jpeg"),
                               ("ham10000", "dermatology", "ham10000-subset/images/*.jpg"),
                               ("bccd", "microscopy", "bccd/BCCD/JPEGImages/*.jpg")):
        f, e = split_files(list(im.glob(pattern)), n_fit, n_eval)
        out[name] = {"domain": dom, "fit": f, "eval": e}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared/data"))
    ap.add_argument("--work", default="/tmp/ragmed-router-eval")
    ap.add_argument("--image-encoder", default="classic")
    ap.add_argument("--order", default="tags,classifier,zero-shot")
    ap.add_argument("--fit-per-domain", type=int, default=60)
    ap.add_argument("--eval-per-source", type=int, default=40)
    ap.add_argument("--n-nonmedical", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "eval/results/router_eval.json"))
    a = ap.parse_args(argv)

    from ragmed.config import EncoderSpec, load_pipeline
    from ragmed.corpus import read_corpus
    from ragmed.errors import DomainError, RagmedError
    from ragmed.io import load_image
    from ragmed.pipeline import Pipeline
    from ragmed.pipeline.build import build_from_config
    from ragmed.eval.nonmedical import make_nonmedical

    t0 = time.time()
    data, work = Path(a.data), Path(a.work) / a.image_encoder
    work.mkdir(parents=True, exist_ok=True)
    src = sources(data, work, a.fit_per_domain, a.eval_per_source, a.seed)
    rows = []
    for name, s in src.items():
        for p in s["fit"]:
            rows.append({"id": f"{name}-{Path(p).stem}", "image": str(p),
                         "report": f"{s['domain']} image from {name}", "domain_label": s["domain"]})
    manifest = work / "corpus.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cfg = load_pipeline("multidomain")
    cfg.encoders.image = EncoderSpec(name=a.image_encoder)
    cfg.router.params = dict(cfg.router.params, order=a.order.split(","), fit_max_per_domain=a.fit_per_domain * 2)
    report = build_from_config(read_corpus(manifest), work / "index", cfg, progress=False)
    pipe = Pipeline(cfg, index=work / "index")
    router = pipe.router

    def route(path):
        try:
            r = router.route(load_image(path))
            return {"domain": r.domain, "best": r.best, "confidence": r.confidence, "method": r.method,
                    "refused": None}
        except DomainError as e:
            return {"domain": None, "best": None, "confidence": None, "method": None, "refused": str(e.reason)}
        except RagmedError as e:
            return {"domain": None, "best": None, "confidence": None, "method": None, "error": str(e), "refused": None}

    per_source, per_domain = {}, defaultdict(Counter)
    confusion: dict[str, Counter] = defaultdict(Counter)
    for name, s in src.items():
        c = Counter()
        for p in s["eval"]:
            r = route(p)
            truth = s["domain"]
            if r["refused"]:
                c["refused"] += 1
                confusion[truth]["(refused)"] += 1
            elif r["domain"] is None:
                c["uncertain"] += 1
                c["uncertain_best_right"] += r["best"] == truth
                confusion[truth]["(uncertain)"] += 1
            else:
                c["right"] += r["domain"] == truth
                confusion[truth][r["domain"]] += 1
            c["n"] += 1
        per_source[name] = {"domain": s["domain"], "n_fit": len(s["fit"]), **_rates(c)}
        per_domain[s["domain"]].update(c)

    dicom_expect = {"CT1_J2KI": "ct", "CT2_J2KI": "ct", "SC1_J2KI": "ct", "MR1_J2KI": "mri", "MR2_J2KI": "mri",
                    "MR3_J2KI": "mri", "MR4_J2KI": "mri", "RG1_J2KI": "chest-xray", "RG2_J2KI": "xray",
                    "RG3_J2KI": "xray", "MG1_J2KI": "mammography", "US1_J2KI": "ultrasound", "NM1_J2KI": "(refused)",
                    "XA1_J2KI": "(refused)"}
    dicom = []
    for f in sorted((data / "dicom" / "J2KI").iterdir()):
        r = route(f)
        got = "(refused)" if r["refused"] else r["domain"]
        dicom.append({"file": f"J2KI/{f.name}", "expected": dicom_expect.get(f.name), "routed": got,
                      "method": r["method"], "reason": r["refused"]})
    for rel, exp in (("pydicom-test-files/CT_small.dcm", "ct"), ("pydicom-test-files/MR_small.dcm", "mri")):
        f = data / "dicom" / rel
        if f.exists():
            r = route(f)
            dicom.append({"file": rel, "expected": exp, "routed": "(refused)" if r["refused"] else r["domain"],
                          "method": r["method"], "reason": r["refused"]})
    for d in sorted(p for p in (data / "dicom" / "series").rglob("*") if p.is_dir()):
        if not any(c.is_dir() for c in d.iterdir()) and any(c.is_file() for c in d.iterdir()):
            r = route(d)
            rel = str(d.relative_to(data / "dicom"))
            exp = "ct" if "ct" in rel.split("/")[1] else "mri"  # PROVENANCE.md: GE brain EPI, Siemens MR, GE CT
            dicom.append({"file": rel, "expected": exp,
                          "routed": "(refused)" if r["refused"] else r["domain"], "method": r["method"],
                          "reason": r["refused"] or r.get("error")})
    with_truth = [x for x in dicom if x["expected"]]
    nonmed = defaultdict(Counter)
    nonmed_reasons = defaultdict(list)
    for seed in range(a.n_nonmedical):
        for kind, p in make_nonmedical(work / f"nonmedical-{seed}", seed=seed).items():
            r = route(p)
            nonmed[kind]["n"] += 1
            nonmed[kind]["refused"] += bool(r["refused"])
            nonmed_reasons[kind].append(r["refused"] or f"ROUTED to {r['domain']} ({r['method']})")
    # the fitted classifier's own distance limit, with the content checks switched off
    learned = Counter()
    for seed in range(a.n_nonmedical):
        for kind, p in make_nonmedical(work / f"nonmedical-{seed}", seed=seed).items():
            if kind == "blank-frame":
                continue  # a constant image has no usable features; only the content check handles it
            try:
                r = router.route(load_image(p), check=False)
                learned[f"{kind}:routed:{r.domain or 'uncertain'}"] += 1
            except DomainError:
                learned[f"{kind}:refused"] += 1
    out = {
        "task": "domain router: accuracy per domain on held-out images, DICOM tags, non-medical refusal",
        "command": "python " + " ".join([sys.argv[0]] + sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "image_encoder": pipe.image_encoder.id, "order": a.order.split(","),
        "threshold": cfg.router.threshold,
        "fit": report.post_build.get("router"),
        "per_domain": {d: _rates(c) for d, c in sorted(per_domain.items())},
        "per_source": per_source,
        "confusion": {k: dict(v) for k, v in confusion.items()},
        "overall": _rates(sum(per_domain.values(), Counter())),
        "dicom": {"accuracy": round(sum(x["routed"] == x["expected"] for x in with_truth) / len(with_truth), 4),
                  "n": len(with_truth), "files": dicom},
        "non_medical": {k: {"n": v["n"], "refused": v["refused"], "refusal_rate": round(v["refused"] / v["n"], 4),
                            "reasons": nonmed_reasons[k][:2]} for k, v in nonmed.items()},
        "non_medical_classifier_only": dict(learned),
        "notes": ["VQA-RAD images are used only where their own Q/A name the modality; PneumoniaMNIST and "
                  "BreastMNIST are 28x28 images; LC25000 is augmented (near-duplicates within the domain); fundus, "
                  "mammography and non-chest X-ray have no image folder here and are covered by DICOM tags only."],
        "seconds": round(time.time() - t0, 1),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print("| domain | n | accuracy | routed right | uncertain (searched all) | refused |")
    print("| --- | --- | --- | --- | --- | --- |")
    for d, r in out["per_domain"].items():
        print(f"| {d} | {r['n']} | {r['accuracy']} | {r['right']} | {r['uncertain']} | {r['refused']} |")
    print("overall", out["overall"], "\nDICOM tags", out["dicom"]["accuracy"], out["dicom"]["n"])
    print("non-medical", {k: v["refusal_rate"] for k, v in out["non_medical"].items()})
    return 0


def _rates(c: Counter) -> dict:
    n = c["n"] or 1
    return {"n": c["n"], "right": c["right"], "uncertain": c["uncertain"], "refused": c["refused"],
            "accuracy": round(c["right"] / n, 4),
            "accuracy_incl_uncertain_best": round((c["right"] + c["uncertain_best_right"]) / n, 4)}


if __name__ == "__main__":
    sys.exit(main())
