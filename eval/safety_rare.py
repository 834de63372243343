"""Rare findings follow the evidence (issue 12, item 1): the share of "yes" answers against the share of retrieved
evidence that asserts the finding.

    python eval/safety_rare.py build --work /tmp/rare            # the index (once; new or old code read it alike)
    python eval/safety_rare.py run --work /tmp/rare --label after --out eval/results/safety_rare.json

Corpus (built from the shared data, nothing held out used): 280 PneumoniaMNIST *train* images (28 px chest X-rays),
each paired with a real Indiana University report of its class: a normal image with a report whose MeSH indexing is
"normal", a pneumonia image with one indexed Opacity / Pneumonia / Infiltrate / Consolidation / Airspace Disease. So
the reports mention pneumothorax, effusion or cardiomegaly about as often as real ones do (mostly to deny them).
Queries: 50 PneumoniaMNIST *test* images × 4 yes/no questions (pneumothorax, pleural effusion, cardiomegaly,
pneumonia), asked through ``Pipeline.ask`` of the default pipeline (top-5 evidence) with the vote answerer (its closed
strategy; the knowledge graph off), or with ``--generator default`` the default pipeline's own generator.

Per finding: ``yes_share`` (yes answers / questions), ``evidence_share`` (mean share of the 5 cited-or-retrieved
cases whose report asserts the finding: its MeSH indexing lists it), and their gap; target |gap| ≤ 0.10.
``--label before`` with ``PYTHONPATH`` at the pre-issue code gives the before column.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RAGMED_DATA", REPO.parent / "shared" / "data"))
QUESTIONS = {"Is there a pneumothorax?": "Pneumothorax", "Is there a pleural effusion?": "Pleural Effusion",
             "Is there cardiomegaly?": "Cardiomegaly", "Is there pneumonia?": "Pneumonia"}
ABNORMAL = ("Opacity", "Pneumonia", "Infiltrate", "Consolidation", "Airspace Disease")


def _reports() -> list[dict]:
    with open(DATA / "reports" / "iu-xray" / "indiana_reports.csv", newline="", encoding="utf-8") as f:
        out = []
        for r in csv.DictReader(f):
            text = " ".join(x for x in (r["findings"], r["impression"]) if x and x.strip())
            if len(text) >= 20:
                out.append({"uid": r["uid"], "text": text,
                            "mesh": sorted({m.split("/")[0].strip() for m in (r["MeSH"] or "").split(";")})})
    return out


def build(work: Path, n: int = 280, seed: int = 0) -> None:
    from PIL import Image

    from ragmed.corpus import read_corpus
    from ragmed.encoders import create_encoder
    from ragmed.pipeline.build import build_from_config
    from ragmed.config import load_pipeline

    rng = random.Random(seed)
    reps = _reports()
    normal = [r for r in reps if r["mesh"] == ["normal"]]
    abnormal = [r for r in reps if any(a in m for m in r["mesh"] for a in ABNORMAL)]
    with np.load(DATA / "images" / "pneumoniamnist.npz") as z:
        x, y = z["train_images"], z["train_labels"].ravel()
    img_dir = work / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows, meta = [], {}
    for i in sorted(rng.sample(range(len(x)), n)):
        rep = rng.choice(abnormal if y[i] else normal)
        p = img_dir / f"train-{i}.png"
        Image.fromarray(x[i]).save(p)
        cid = f"pm-{i}"
        rows.append({"id": cid, "image": str(p.relative_to(work)), "report": rep["text"]})
        meta[cid] = {"uid": rep["uid"], "mesh": rep["mesh"], "label": int(y[i])}
    with open(work / "corpus.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "image", "report"])
        w.writeheader()
        w.writerows(rows)
    (work / "meta.json").write_text(json.dumps(meta))
    cfg = load_pipeline("default")
    cfg.generator.name, cfg.generator.params = "vote", {}
    build_from_config(read_corpus(work / "corpus.csv"), work / "index", cfg, progress=False,
                      text_encoder=create_encoder("minilm"))


def run(work: Path, n_queries: int = 50, seed: int = 0, generator: str = "vote") -> dict:
    from PIL import Image

    from ragmed.errors import RagmedError
    from ragmed.io import load_image
    from ragmed.pipeline import Pipeline

    meta = json.loads((work / "meta.json").read_text())
    if generator == "vote":  # the index records the default pipeline with the vote as its generator
        p = Pipeline.for_index(work / "index")
    else:  # the default pipeline as shipped (its generator, e.g. ragmed-answerer), on the same index
        p = Pipeline.for_index(work / "index", pipeline=generator)
    p.config.knowledge.max_concepts = 0
    with np.load(DATA / "images" / "pneumoniamnist.npz") as z:
        x = z["test_images"]
    rng = random.Random(seed)
    qdir = work / "queries"
    qdir.mkdir(exist_ok=True)
    picks = sorted(rng.sample(range(len(x)), n_queries))
    per: dict[str, list] = {q: [] for q in QUESTIONS}
    for i in picks:
        f = qdir / f"test-{i}.png"
        Image.fromarray(x[i]).save(f)
        img = load_image(f)
        for q, mesh in QUESTIONS.items():
            try:
                a = p.ask(img, q, task="closed")
            except RagmedError as e:
                per[q].append({"error": str(e)})
                continue
            said = None if a.insufficient_evidence else a.text.split()[0].strip(".,").lower()
            ev = [meta.get(e.case_id, {}) for e in a.evidence]
            asserting = [mesh in m.get("mesh", []) for m in ev]
            per[q].append({"answer": said, "evidence_share": sum(asserting) / max(1, len(asserting)),
                           "cited": a.citations, "n_evidence": len(ev)})
    out = {}
    for q, rows in per.items():
        ok = [r for r in rows if "error" not in r]
        yes = sum(r["answer"] == "yes" for r in ok) / max(1, len(ok))
        answered = [r for r in ok if r["answer"] is not None]
        ev_share = float(np.mean([r["evidence_share"] for r in ok])) if ok else 0.0
        out[q] = {"n": len(ok), "yes_share": round(yes, 4), "evidence_share": round(ev_share, 4),
                  "gap": round(yes - ev_share, 4), "within_0.10": abs(yes - ev_share) <= 0.10,
                  "answered_share": round(len(answered) / max(1, len(ok)), 4),
                  "yes_share_of_answered": round(sum(r["answer"] == "yes" for r in answered) / max(1, len(answered)), 4),
                  "no_share": round(sum(r["answer"] == "no" for r in ok) / max(1, len(ok)), 4)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["build", "run"])
    ap.add_argument("--work", required=True)
    ap.add_argument("--label", default="after")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--generator", default="vote",
                    help="'vote' (the index's recorded pipeline, the vote answerer) or a pipeline name/YAML whose "
                         "generator answers, e.g. 'default'")
    ap.add_argument("--out", default=str(REPO / "eval" / "results" / "safety_rare.json"))
    a = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"shared data not found at {DATA} (set RAGMED_DATA)")
    work = Path(a.work)
    t0 = time.perf_counter()
    if a.mode == "build":
        work.mkdir(parents=True, exist_ok=True)
        build(work)
        print(f"built {work / 'index'} in {time.perf_counter() - t0:.0f}s")
        return
    res = {"task": "safety_rare", "label": a.label,
           "command": f"python eval/safety_rare.py run --work WORK --label {a.label} --queries {a.queries}"
                      + (f" --generator {a.generator}" if a.generator != "vote" else ""),
           "generator": a.generator, "by_question": run(work, a.queries, generator=a.generator), "seconds": None}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
