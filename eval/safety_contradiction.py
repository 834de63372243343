"""Contradiction rate of closed answers (issue 12, item 2): answers that cite at least one case whose text asserts
the opposite.

    python eval/safety_contradiction.py --out eval/results/safety_contradiction.json [--label after] [--model]

The set is written from real report text: Indiana University chest X-ray reports (``$RAGMED_DATA/reports/iu-xray``,
findings + impression). For each of 16 findings (pleural effusion, pneumothorax, cardiomegaly, …) and 25 seeded
draws, five reports form the evidence of one yes/no question ("Is there a pleural effusion?"): 0–3 reports whose
MeSH indexing lists the finding (the report asserts it), 0–3 whose MeSH indexing does not list it although their text
names it with an explicit negation ("No pleural effusion"), the rest silent (the finding not named), shuffled and
scored in random order. the findings with at least 3 reports each way, × 25 draws (≥ 200 items; the count is in the result).

The judge is independent of ragmed's negation detector: a report asserts the finding when its human MeSH indexing
lists it *and* every sentence naming it does so without a negation or hedge cue; it denies the finding when MeSH does
not list it *and* every sentence naming it has a negation cue before it (no hedge). Reports where the two disagree, or
that hedge, are left out of the set. An answer "yes" contradicts a cited denying report; "no" a cited asserting one. Answerers: the vote generator and the extractive generator (no model), and with ``--model`` the
default pipeline's SmolLM2-135M asked directly (``closed="model"``, then ragmed's ``ground()`` check). Run the same
script on the pre-issue code for the "before" column (``PYTHONPATH=<old checkout> python eval/safety_contradiction.py
--label before``).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RAGMED_DATA", REPO.parent / "shared" / "data"))

FINDINGS = {  # question -> (MeSH heading, words that name it in report text)
    "Is there a pleural effusion?": ("Pleural Effusion", r"\beffusions?\b"),
    "Is there a pneumothorax?": ("Pneumothorax", r"\bpneumothora"),
    "Is there cardiomegaly?": ("Cardiomegaly", r"\bcardiomegaly\b"),
    "Is there pulmonary edema?": ("Pulmonary Edema", r"\bedema\b"),
    "Is there a nodule?": ("Nodule", r"\bnodul"),
    "Is there atelectasis?": ("Pulmonary Atelectasis", r"\batelecta"),
    "Is there emphysema?": ("Emphysema", r"\bemphysem"),
    "Is there a fracture?": ("Fractures, Bone", r"\bfracture"),
    "Is there consolidation?": ("Consolidation", r"\bconsolidat"),
    "Is there pneumonia?": ("Pneumonia", r"\bpneumonia\b"),
    "Is there scoliosis?": ("Scoliosis", r"\bscoliosis\b"),
    "Is there a hiatal hernia?": ("Hernia, Hiatal", r"\bhernia\b"),
    "Is there an infiltrate?": ("Infiltrate", r"\binfiltrat"),
    "Is there a granuloma?": ("Granuloma", r"\bgranuloma"),
    "Is there airspace disease?": ("Airspace Disease", r"\bairspace disease\b"),
    "Is there an opacity?": ("Opacity", r"\bopacit"),
}


def reports() -> list[dict]:
    p = DATA / "reports" / "iu-xray" / "indiana_reports.csv"
    out = []
    with open(p, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            text = " ".join(x for x in (r["findings"], r["impression"]) if x and x.strip())
            if len(text) < 20:
                continue
            mesh = {m.split("/")[0].strip() for m in (r["MeSH"] or "").split(";")}
            out.append({"uid": r["uid"], "text": text, "mesh": mesh})
    return out


_NEG_CUE = re.compile(r"\b(no|not|without|negative|free of|clear of|resolved|absent)\b", re.I)
_HEDGE_CUE = re.compile(r"\b(may|might|could|possibl\w*|probabl\w*|question\w*|suspect\w*|suggest\w*|versus|vs|"
                        r"likely|cannot|if|borderline|xxxx)\b", re.I)


def _listed(mesh: str, headings: set[str]) -> bool:
    """The MeSH indexing lists the finding (any heading that contains it: "Pulmonary Emphysema" for emphysema)."""
    return any(mesh.lower() in h.lower() for h in headings)


def _explicit(rx, text: str) -> str | None:
    """The judge's reading of the text, deliberately strict and independent of ragmed's detector: "no" when every
    sentence naming the finding has a negation cue before it and no hedge; "yes" when every such sentence names it
    with no negation or hedge cue at all; None otherwise (mixed, hedged or redacted: not used)."""
    said = set()
    for sent in re.split(r"(?<=[.;])\s+|\n+", text):
        m = rx.search(sent)
        if not m:
            continue
        if _HEDGE_CUE.search(sent):
            return None
        said.add("no" if _NEG_CUE.search(sent[: m.start()]) else ("yes" if not _NEG_CUE.search(sent) else None))
    return said.pop() if len(said) == 1 and None not in said else None


def build_items(n_per_finding: int = 25, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    reps = reports()
    items = []
    for question, (mesh, pat) in FINDINGS.items():
        rx = re.compile(pat, re.I)
        pos = [r for r in reps if _listed(mesh, r["mesh"]) and _explicit(rx, r["text"]) == "yes"]
        neg = [r for r in reps if not _listed(mesh, r["mesh"]) and _explicit(rx, r["text"]) == "no"]
        silent = [r for r in reps if not _listed(mesh, r["mesh"]) and not rx.search(r["text"])]
        if len(pos) < 3 or len(neg) < 3:
            continue
        for i in range(n_per_finding):
            n_pos = rng.randint(0, 3)
            n_neg = rng.randint(0, min(3, 5 - n_pos))
            chosen = ([dict(r, gold="yes") for r in rng.sample(pos, n_pos)] +
                      [dict(r, gold="no") for r in rng.sample(neg, n_neg)] +
                      [dict(r, gold=None) for r in rng.sample(silent, 5 - n_pos - n_neg)])
            rng.shuffle(chosen)
            items.append({"id": f"{mesh}:{i}", "question": question, "evidence": chosen,
                          "scores": sorted((rng.random() for _ in chosen), reverse=True)})
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "eval" / "results" / "safety_contradiction.json"))
    ap.add_argument("--label", default="after")
    ap.add_argument("--per-finding", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", action="store_true", help="also ask SmolLM2-135M directly (slow: ~1-2 s an answer)")
    ap.add_argument("--answerer", action="store_true",
                    help="also the default ragmed-answerer, shown a real chest X-ray with each item (PneumoniaMNIST "
                         "test images, seeded): the classifier answers, ground() decides what it may cite")
    ap.add_argument("--answerer-beta", type=float, action="append", default=[],
                    help="also ragmed-answerer with this evidence-pooling weight (evidence_alpha 0.5); repeatable")
    a = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"shared data not found at {DATA} (set RAGMED_DATA)")
    from ragmed.encoders import create_encoder
    from ragmed.generate import create_generator
    from ragmed.generate.citations import cited_refs
    from ragmed.generate.text import yes_no
    from ragmed.types import Evidence

    t0 = time.perf_counter()
    te = create_encoder("minilm")
    gens = {"vote": create_generator("vote", text_encoder=te),
            "extractive": create_generator("extractive", text_encoder=te)}
    if a.model:
        gens["smollm2"] = create_generator("gguf", closed="model")
    images: list = [None]
    if a.answerer:
        import numpy as np

        from ragmed.io import load_image
        gens["ragmed-answerer"] = create_generator("ragmed-answerer", text_encoder=te)
        for b in a.answerer_beta:
            gens[f"ragmed-answerer-beta{b:g}"] = create_generator("ragmed-answerer", text_encoder=te,
                                                                  evidence_beta=b, evidence_alpha=0.5)
        tmp = Path(tempfile.mkdtemp(prefix="ragmed-contradiction-"))
        with np.load(DATA / "images" / "pneumoniamnist.npz") as z:
            x = z["test_images"]
        from PIL import Image
        picks = random.Random(a.seed).sample(range(len(x)), 50)
        images = []
        for i in picks:
            Image.fromarray(x[i]).resize((224, 224)).save(tmp / f"{i}.png")
            images.append(load_image(tmp / f"{i}.png"))
    items = build_items(a.per_finding, a.seed)
    res: dict = {"task": "safety_contradiction", "label": a.label,
                 "command": f"python eval/safety_contradiction.py --label {a.label} --per-finding {a.per_finding} "
                            f"--seed {a.seed}" + (" --model" if a.model else "") + (" --answerer" if a.answerer else "")
                            + "".join(f" --answerer-beta {b:g}" for b in a.answerer_beta),
                 "n_items": len(items), "judge": "IU MeSH indexing + explicit negation cues (see the module docstring)", "by_generator": {}}
    for name, g in gens.items():
        rows = []
        for k, it in enumerate(items):
            ev = [Evidence(case_id=f"iu:{r['uid']}", score=s, ref=f"[{i}]", text=r["text"], excerpt=r["text"][:300])
                  for i, (r, s) in enumerate(zip(it["evidence"], it["scores"]), start=1)]
            img = images[k % len(images)] if name.startswith("ragmed-answerer") else None
            out = g.generate(it["question"], ev, [], task="closed", image=img)
            ans = None if out.insufficient else yes_no(out.text)
            gold = {f"[{i}]": r["gold"] for i, r in enumerate(it["evidence"], start=1)}
            cites = [r for r in cited_refs(out.text) if r in gold]
            bad = [r for r in cites if ans is not None and gold[r] is not None and gold[r] != ans]
            rows.append({"id": it["id"], "answer": ans, "abstained": out.insufficient, "cited": cites,
                         "contradicting": bad, "text": out.text[:200], "flags": out.flags})
        answered = [r for r in rows if r["answer"] is not None]
        n_bad = sum(bool(r["contradicting"]) for r in rows)
        res["by_generator"][name] = {
            "n": len(rows), "answered": len(answered),
            "contradiction_rate": round(n_bad / len(rows), 4),
            "contradiction_rate_of_answered": round(n_bad / max(1, len(answered)), 4),
            "n_contradicting_answers": n_bad,
            "n_flagged_departing_from_evidence": sum(any(str(f).startswith("departs-from-evidence")
                                                         for f in r["flags"]) for r in rows),
            "n_citing_nothing": sum(r["answer"] is not None and not r["cited"] for r in rows),
            "examples": [r for r in rows if r["contradicting"]][:5]}
        print(name, json.dumps({k: v for k, v in res["by_generator"][name].items() if k != "examples"}))
    res["seconds"] = round(time.perf_counter() - t0, 1)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
