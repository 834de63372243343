"""Reproduce the shipped ragmed-default image encoder (ragmed/encoders/weights/ragmed-default) exactly.

Trained ONLY on data whose licence allows redistributing derived weights (../shared/data/README.md):
  - VQA-RAD (CC0): 315 radiology images (head CT/MR, chest X-ray, abdominal CT) with their question–answer pairs;
  - PneumoniaMNIST (CC BY 4.0): paediatric chest X-rays, normal / pneumonia, rendered as text;
  - BreastMNIST (CC BY 4.0): breast ultrasound, malignant / normal-or-benign, rendered as text;
  - BCCD (MIT): blood smear microscopy; the VOC cell counts (WBC, RBC, platelets) rendered as text;
  - POCUS lung ultrasound, only the rows licensed CC BY (51): label + the source caption / annotators' comments.
Never: HAM10000, LC25000, brain-tumor-mri, the CC BY-NC rows of POCUS (tests and benchmarks only).

    python eval/train_default_encoder.py                       # writes the shipped weights
    python eval/train_default_encoder.py --out /tmp/enc --holdout-vqa-rad   # the evaluation model (see below)
    python eval/train_default_encoder.py --out /tmp/enc --holdout-split eval/splits/vqa_rad_vlm_seed0.json

``--holdout-vqa-rad`` leaves out the VQA-RAD images of the evaluation split (:func:`vqa_rad_split`, seed 0), so
eval/encoder_retrieval.py can score an encoder that never saw its evaluation images.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RAGMED_DATA", REPO.parent / "shared" / "data"))
SHIPPED = REPO / "ragmed" / "encoders" / "weights" / "ragmed-default"

ORGAN = {"HEAD": "head", "CHEST": "chest", "ABD": "abdomen"}
# Share of each source in every epoch (weighted sampling): small sources are seen more often than their size.
SHARES = {"vqa-rad": 0.35, "pneumoniamnist": 0.2, "breastmnist": 0.15, "bccd": 0.15, "pocus-cc-by": 0.15}


def vqa_rad_split(seed: int = 0) -> tuple[set[str], set[str]]:
    """VQA-RAD image names split in half by image (train, eval), fixed seed; used by the retrieval evaluation."""
    names = sorted(p.name for p in (DATA / "vqa-rad" / "images").glob("*.jpg"))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(names))
    ev = {names[i] for i in perm[: len(names) // 2]}
    return set(names) - ev, ev


def vqa_rad_samples(exclude: set[str] = frozenset()):
    from ragmed.encoders.train import Sample
    from ragmed.io import load_image

    qa = json.loads((DATA / "vqa-rad" / "train.json").read_text())
    by_image: dict[str, list[dict]] = defaultdict(list)
    for r in qa:
        by_image[r["image_name"]].append(r)
    out = []
    for name in sorted(by_image):
        if name in exclude or not (DATA / "vqa-rad" / "images" / name).exists():
            continue
        rows = by_image[name]
        organ = ORGAN.get(rows[0]["image_organ"], rows[0]["image_organ"].lower())
        texts = [f"Radiology image of the {organ}."]
        texts += [f"Radiology image of the {organ}. {r['question'].strip()} {str(r['answer']).strip()}." for r in rows]
        out.append(Sample(pixels=lambda p=DATA / "vqa-rad" / "images" / name: load_image(p).pixels, texts=texts,
                          domain="vqa-rad"))
    return out


def mnist_samples(npz: Path, domain: str, texts_by_label: dict[int, list[str]], splits=("train", "val")):
    from ragmed.encoders.train import Sample

    d = np.load(npz)
    out = []
    for s in splits:
        imgs, labels = d[f"{s}_images"], d[f"{s}_labels"].reshape(-1)
        for im, lab in zip(imgs, labels):
            out.append(Sample(pixels=np.ascontiguousarray(im, dtype=np.uint8), texts=texts_by_label[int(lab)],
                              domain=domain))
    return out


def pneumonia_samples():
    return mnist_samples(DATA / "images" / "pneumoniamnist.npz", "pneumoniamnist", {
        0: ["Paediatric chest X-ray, frontal view: normal, clear lungs.", "Chest radiograph of a child without pneumonia."],
        1: ["Paediatric chest X-ray, frontal view: pneumonia with lung opacities.", "Chest radiograph of a child with pneumonia."],
    })


def breast_samples():
    return mnist_samples(DATA / "images" / "breastmnist" / "breastmnist.npz", "breastmnist", {
        0: ["Breast ultrasound image showing a malignant tumour.", "Breast ultrasound: malignant mass."],
        1: ["Breast ultrasound image: benign lesion or normal breast tissue.", "Breast ultrasound: no malignancy."],
    })


def bccd_samples():
    from ragmed.encoders.train import Sample
    from ragmed.io import load_image

    root = DATA / "images" / "bccd" / "BCCD"
    out = []
    for xml in sorted((root / "Annotations").glob("*.xml")):
        tree = ET.parse(xml)
        names = [o.findtext("name") for o in tree.findall("object")]
        img = root / "JPEGImages" / (tree.findtext("filename") or xml.stem + ".jpg")
        if not img.exists():
            img = root / "JPEGImages" / (xml.stem + ".jpg")
        if not img.exists():
            continue
        n = {k: names.count(k) for k in ("WBC", "RBC", "Platelets")}
        texts = ["Microscopy of a stained peripheral blood smear.",
                 f"Peripheral blood smear under the microscope with {n['WBC']} white blood cell"
                 f"{'s' if n['WBC'] != 1 else ''}, {n['RBC']} red blood cells and {n['Platelets']} platelet"
                 f"{'s' if n['Platelets'] != 1 else ''}."]
        out.append(Sample(pixels=lambda p=img: load_image(p).pixels, texts=texts, domain="bccd"))
    return out


POCUS_LABEL = {"regular": "normal lung, A-lines", "COVID-19": "COVID-19 pneumonia",
               "Bacterial pneumonia": "bacterial pneumonia", "Viral pneumonia": "viral pneumonia"}


def pocus_samples():
    from ragmed.encoders.train import Sample
    from ragmed.io import load_image

    root = DATA / "images" / "pocus-lus"
    out = []
    with open(root / "metadata.csv", newline="") as f:
        for r in csv.DictReader(f):
            lic = r["license"].replace(" ", "")
            if not lic.startswith("CCBY") or "NC" in lic or "ND" in lic:
                continue
            lab = POCUS_LABEL.get(r["label"], r["label"])
            texts = [f"Lung ultrasound ({r['probe']} probe): {lab}."]
            for c in ("comments_source", "comments_md1", "comments_md2", "comments_md3"):
                if r.get(c, "").strip():
                    texts.append(f"Lung ultrasound: {r[c].strip()}")
            out.append(Sample(pixels=lambda p=root / r["file"]: load_image(p).pixels, texts=texts,
                              domain="pocus-cc-by"))
    return out


def all_samples(exclude_vqa: set[str] = frozenset()):
    groups = {"vqa-rad": vqa_rad_samples(exclude_vqa), "pneumoniamnist": pneumonia_samples(),
              "breastmnist": breast_samples(), "bccd": bccd_samples(), "pocus-cc-by": pocus_samples()}
    samples = []
    for name, g in groups.items():
        for s in g:
            s.weight = SHARES[name] / len(g)
            samples.append(s)
    return samples


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(SHIPPED))
    ap.add_argument("--holdout-vqa-rad", action="store_true", help="leave out the VQA-RAD evaluation images")
    ap.add_argument("--holdout-split", default=None,
                    help="a committed split file (JSON with eval_images, e.g. eval/splits/vqa_rad_vlm_seed0.json): "
                         "leave out its evaluation images instead")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--epoch-size", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ssl-weight", type=float, default=3.0)
    ap.add_argument("--ssl-temperature", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--head-grid", type=int, default=2)
    ap.add_argument("--aug-strength", type=float, default=0.35)
    ap.add_argument("--stats-bins", type=int, default=0)
    ap.add_argument("--ssl-aug-strength", type=float, default=0.0,
                    help=">0: a strongly augmented second view for the image–image term only")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)

    from ragmed.encoders import create_encoder
    from ragmed.encoders.train import TrainConfig, build_trainset, train_tower
    from ragmed.encoders.tower import PreprocessConfig, TowerConfig

    t0 = time.perf_counter()
    exclude = vqa_rad_split()[1] if a.holdout_vqa_rad else set()
    if a.holdout_split:
        exclude = set(json.loads(Path(a.holdout_split).read_text())["eval_images"])
    pre = PreprocessConfig()
    data = build_trainset(all_samples(exclude), pre.size)
    print(f"prepared {len(data)} images, {len(data.texts)} texts in {time.perf_counter() - t0:.1f}s: "
          f"{json.dumps(data.summary())}", file=sys.stderr)
    cfg = TrainConfig(epochs=a.epochs, epoch_size=a.epoch_size, batch_size=a.batch_size, lr=a.lr,
                      ssl_weight=a.ssl_weight, ssl_temperature=a.ssl_temperature, seed=a.seed, aug_strength=a.aug_strength,
                      ssl_aug_strength=a.ssl_aug_strength)
    held_out = (f" minus the evaluation images of {Path(a.holdout_split).name}" if a.holdout_split
                else " minus its evaluation half (vqa_rad_split seed 0)" if exclude else "")
    trained_on = ("VQA-RAD (CC0)" + held_out
                  + ", PneumoniaMNIST train+val (CC BY 4.0), BreastMNIST train+val (CC BY 4.0), BCCD (MIT), "
                    "POCUS lung ultrasound CC BY rows")
    cmd = "python eval/train_default_encoder.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:]))
    train_tower(data, a.out, create_encoder("minilm"), config=cfg, tower=TowerConfig(head_grid=a.head_grid, stats_bins=a.stats_bins, mean=pre.mean, std=pre.std), preprocess=pre,
                progress=not a.quiet, info={"trained_on": trained_on, "command": cmd.strip()})
    print(f"wrote {a.out} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
