"""Negation detection measured on the public NegEx test set (Chapman et al. 2001: 2,376 concept mentions in
sentences of 120 de-identified clinical reports, each annotated Affirmed or Negated).

The data is not part of ragmed and is never committed: fetch it into scratch space (the file
``genConText/rsAnnotations-1-120-random.txt`` or ``negex.python/Annotations-1-120.txt`` of the public repository
chapmanbe/negex) and pass its path. For every row the concept is located in its sentence (case-insensitive; the
annotated concept is written in capitals there), its tokens are protected, and it counts as negated when any of its
tokens lies in a negation scope of ragmed's one detector (``ragmed.knowledge.text.negated_tokens``, the function the
linker and the generator share). Accuracy, and precision / recall / F1 of the Negated class, are reported, with the
majority-class baseline and the rows whose concept could not be found.

    python eval/negation_eval.py --file /tmp/negex/rsAnnotations-1-120-random.txt [--out eval/results/negation.json]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def read_rows(path: Path) -> list[dict]:
    """Rows of either layout: (id, _, concept, sentence, label, …) or the header layout
    (Report No., Concept, Sentence, Negation)."""
    rows = []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for r in csv.reader(f, delimiter="\t"):
            if not r or r[0].startswith("Report"):
                continue
            if len(r) >= 5 and r[4].strip() in ("Affirmed", "Negated", "Possible"):
                concept, sentence, label = r[2], r[3], r[4]
            elif len(r) >= 4:
                concept, sentence, label = r[1], r[2], r[3]
            else:
                continue
            label = label.strip()
            if label not in ("Affirmed", "Negated"):
                continue
            rows.append({"concept": " ".join(concept.split()), "sentence": sentence.strip().strip('"'),
                         "negated": label == "Negated"})
    return rows


def locate(sentence: str, concept: str) -> tuple[int, int] | None:
    """Character span of the concept in the sentence (whitespace-insensitive, case-insensitive)."""
    import re

    words = concept.split()
    if not words:
        return None
    pat = r"\s+".join(re.escape(w) for w in words)
    m = re.search(pat, sentence, re.I)
    return (m.start(), m.end()) if m else None


def evaluate(rows: list[dict]) -> dict:
    from ragmed.knowledge.text import negated_tokens, tokenize

    tp = fp = fn = tn = missing = 0
    errors = []
    t0 = time.perf_counter()
    for r in rows:
        span = locate(r["sentence"], r["concept"])
        if span is None:
            missing += 1
            continue
        toks = tokenize(r["sentence"])
        idx = [k for k, t in enumerate(toks) if t.start >= span[0] and t.end <= span[1]]
        if not idx:
            missing += 1
            continue
        a, b = idx[0], idx[-1] + 1
        neg = negated_tokens(r["sentence"], toks, [(a, b)])
        pred = any(neg[a:b])
        if pred and r["negated"]:
            tp += 1
        elif pred:
            fp += 1
        elif r["negated"]:
            fn += 1
        else:
            tn += 1
        if pred != r["negated"] and len(errors) < 25:
            errors.append({"concept": r["concept"], "gold_negated": r["negated"], "sentence": r["sentence"][-200:]})
    n = tp + fp + fn + tn
    p = tp / (tp + fp) if tp + fp else 0.0
    rc = tp / (tp + fn) if tp + fn else 0.0
    return {"rows": len(rows), "scored": n, "concept_not_found": missing, "accuracy": round((tp + tn) / n, 4),
            "majority_baseline": round(max(tp + fn, fp + tn) / n, 4),
            "negated": {"precision": round(p, 4), "recall": round(rc, 4),
                        "f1": round(2 * p * rc / (p + rc), 4) if p + rc else 0.0},
            "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
            "ms_per_row": round(1000 * (time.perf_counter() - t0) / max(1, n), 4), "example_errors": errors}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--file", required=True, help="NegEx annotation file (tab-separated), fetched by you")
    ap.add_argument("--out", default=str(REPO / "eval" / "results" / "negation.json"))
    args = ap.parse_args(argv)
    path = Path(args.file)
    if not path.exists():
        print(f"{path} not found: fetch the NegEx test set (see this script's docstring)", file=sys.stderr)
        return 2
    res = evaluate(read_rows(path))
    res = {"command": "python " + " ".join([os.path.relpath(__file__, REPO), "--file", path.name,
                                             *(["--out", os.path.relpath(args.out, REPO)] if argv and "--out" in argv
                                               else [])]),
           "dataset": f"NegEx test set ({path.name}, Chapman et al. 2001; public repository chapmanbe/negex)",
           **res}
    print(json.dumps({k: v for k, v in res.items() if k != "example_errors"}))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
