"""Concept-linking quality on IU X-ray reports against their MeSH indexing (issue 5's protocol).

Reports: the first 500 of the test split in ``r2gen-split.json``, matched to ``indiana_reports.csv`` by uid (the number
in ``CXR<uid>_…``); text = findings + impression. Gold: the MeSH column split on ';', the part before the first '/',
without "normal" and "No Indexing". A non-negated linked concept is correct when its name or one of its synonyms
equals a gold term (case-insensitive). Micro-averaged precision (over distinct linked concepts per report) and recall
(over distinct gold terms per report). Also reported, clearly labelled: the same with hedged mentions left out, and
a diagnostic precision that also accepts a concept whose name's head word occurs in a gold heading (to separate
vocabulary gaps, e.g. "Atelectasis" vs the MeSH heading "Pulmonary Atelectasis", from wrong concepts).

    python eval/link_iu.py --kg knowledge/open-default [--kg DIR ...] [--fuzzy] [--out eval/results/link_iu.json]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RAGMED_DATA", REPO.parent / "shared" / "data"))


def load_iu(n: int = 500) -> list[dict]:
    base = DATA / "reports" / "iu-xray"
    split = json.loads((base / "r2gen-split.json").read_text())
    by_uid = {}
    with open(base / "indiana_reports.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_uid[row["uid"]] = row
    out = []
    for item in split["test"]:
        if len(out) >= n:
            break
        m = re.match(r"CXR(\d+)_", item["id"])
        row = by_uid.get(m.group(1)) if m else None
        if row is None:
            continue
        text = " ".join(x.strip() for x in (row["findings"], row["impression"]) if x and x.strip())
        gold = set()
        for t in row["MeSH"].split(";"):
            t = t.split("/")[0].strip()
            if t and t.lower() not in ("normal", "no indexing"):
                gold.add(t.lower())
        out.append({"id": item["id"], "uid": row["uid"], "text": text, "gold": gold})
    return out


def evaluate(kg, reports: list[dict], *, fuzzy: bool = False, skip_hedged: bool = False) -> dict:
    """Protocol metric; with ``skip_hedged`` also hedged mentions ("may represent X") are left out (a variant)."""
    tp_pred = n_pred = tp_gold = n_gold = lenient = 0
    fp_names: Counter = Counter()
    fn_terms: Counter = Counter()
    negated = 0
    t0 = time.perf_counter()
    for r in reports:
        mentions = kg.link(r["text"], fuzzy=fuzzy)
        negated += sum(1 for m in mentions if m.negated)
        pred = {m.id for m in mentions if not m.negated and not (skip_hedged and m.uncertain)}
        found = set()
        for cid in pred:
            c = kg.concept(cid)
            names = {c["name"].lower(), *(s.lower() for s in c["synonyms"])}
            hit = names & r["gold"]
            n_pred += 1
            if hit:
                tp_pred += 1
                found |= hit
            else:
                fp_names[c["name"]] += 1
                # diagnostic only: the concept's name shares its head word with a gold heading
                # ("Atelectasis" / "Pulmonary Atelectasis", "Hernia" / "Hernia, Hiatal")
                heads = {n.replace(",", " ").split()[-1] for n in names if n.strip()}
                if any(h in g.replace(",", " ").split() for h in heads for g in r["gold"]):
                    lenient += 1
        n_gold += len(r["gold"])
        tp_gold += len(found)
        fn_terms.update(r["gold"] - found)
    secs = time.perf_counter() - t0
    p = tp_pred / n_pred if n_pred else 0.0
    rcl = tp_gold / n_gold if n_gold else 0.0
    return {"kg": kg.id, "fuzzy": fuzzy, "variant": "asserted only (hedged left out)" if skip_hedged else "protocol",
            "reports": len(reports), "predicted": n_pred, "correct": tp_pred,
            "gold_terms": n_gold, "gold_found": tp_gold, "precision": round(p, 4), "recall": round(rcl, 4),
            "diagnostic_precision_head_word": round((tp_pred + lenient) / n_pred, 4) if n_pred else 0.0,
            "f1": round(2 * p * rcl / (p + rcl), 4) if p + rcl else 0.0, "negated_mentions": negated,
            "ms_per_report": round(1000 * secs / max(1, len(reports)), 3),
            "top_false_positives": fp_names.most_common(15), "top_missed_gold": fn_terms.most_common(15)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kg", action="append", help="knowledge directory (repeatable); default: the bundled graph")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--fuzzy", action="store_true", help="also evaluate with the embedding fallback")
    ap.add_argument("--out", default=str(REPO / "eval" / "results" / "link_iu.json"))
    args = ap.parse_args(argv)
    if not (DATA / "reports" / "iu-xray").exists():
        print(f"IU X-ray data not found under {DATA} (set RAGMED_DATA)", file=sys.stderr)
        return 2
    from ragmed.knowledge import default_graph_path, load_graph

    reports = load_iu(args.n)
    results = []
    for path in args.kg or [str(default_graph_path())]:
        kg = load_graph(path)
        for fz, skip in ([(False, False), (False, True)] + ([(True, False)] if args.fuzzy else [])):
            res = evaluate(kg, reports, fuzzy=fz, skip_hedged=skip)
            res["path"] = os.path.relpath(path, REPO) if Path(path).is_absolute() else path
            results.append(res)
            print(json.dumps({k: v for k, v in res.items() if not k.startswith("top_")}))
    out = {"command": "python " + " ".join([os.path.relpath(__file__, REPO), *(argv or sys.argv[1:])]),
           "protocol": __doc__.split("\n\n")[1].replace("\n", " "), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
