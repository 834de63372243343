"""Concept-linking quality on IU X-ray reports against their MeSH indexing (issue 5's protocol, issue 17's additions).

Reports: the test split of ``r2gen-split.json`` (first 500, as issue 5), matched to ``indiana_reports.csv`` by uid
(the number in ``CXR<uid>_…``); text = findings + impression. Gold: the MeSH column split on ';', the part before
the first '/', without "normal" and "No Indexing". A non-negated linked concept is correct when its name or one of
its synonyms equals a gold term (case-insensitive). Micro-averaged precision (over distinct linked concepts per
report) and recall (over distinct gold terms per report).

Variants, each clearly labelled in the result file:
- ``protocol``: every non-negated linked concept (all link types, anatomy and imaging terms included);
- ``findings``: only concepts of the UMLS Disorders group (findings, diseases …): what the indexers index;
- ``learned map``: a mapping from what the linker found to IU's index terms, learned on reports disjoint from the
  held-back ones; nothing is learned, chosen or tuned on the held-back reports, which are scored ONCE per design
  (all 590 of r2gen's test split, and its two halves 0-294 / 295-589):
  - design A (first session): rule table "feature -> term" (feature = a non-negated concept or a pair of them in one
    sentence, support >= MIN_SUPPORT train reports), learned on the train split (2,069), threshold = most recall
    with precision >= 0.75 on the val split (296);
  - design B: one logistic regression per term over the linker's features (``ragmed.knowledge.indexer``); the
    train half = train + val splits (2,365 reports); feature set, C and threshold chosen by 5-fold cross-validation
    on it (threshold: best F1 whose precision has a 95 % Wilson lower bound >= 0.75), then refitted on all of it.
  Each design reports its dev figures (A: val; B: out-of-fold) beside the held-back ones, the dev precision-recall
  curve, a causes table of its dev false positives, and (B) the held-back curve as a diagnostic never used to choose
  (plotted to ``link_iu.pr_curve.png``).
Also reported: the share of linked concepts (distinct per report) that carry a UMLS CUI, for all link types and for
findings only, and the diagnostic head-word precision of issue 5.

    python eval/link_iu.py [--kg DIR ...] [--fuzzy] [--out eval/results/link_iu.json]
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


def load_iu(n: int = 500, split: str = "test") -> list[dict]:
    base = DATA / "reports" / "iu-xray"
    items = json.loads((base / "r2gen-split.json").read_text())[split]
    by_uid = {}
    with open(base / "indiana_reports.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_uid[row["uid"]] = row
    out = []
    for item in items:
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


MIN_SUPPORT = 3
THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8)


def features(kg, text: str) -> set[str]:
    """Design A's features: non-negated linked concepts of a report, and pairs of them within one sentence."""
    from ragmed.knowledge.text import sentence_ids, tokenize

    ms = [m for m in kg.link(text) if not m.negated]
    toks = tokenize(text)
    sid = sentence_ids(text, toks)
    starts = {t.start: s for t, s in zip(toks, sid)}
    feats = {m.id for m in ms}
    by_sent: dict[int, list[str]] = {}
    for m in ms:
        by_sent.setdefault(starts.get(m.span[0], -1), []).append(m.id)
    for ids in by_sent.values():
        ids = sorted(set(ids))
        feats.update(f"{a}+{b}" for k, a in enumerate(ids) for b in ids[k + 1:])
    return feats


def learn_map(kg, train: list[dict]) -> dict[str, dict[str, float]]:
    """feature -> {term: share of the feature's train reports indexed with the term} (support >= MIN_SUPPORT)."""
    n_f: Counter = Counter()
    n_fg: dict[str, Counter] = {}
    for r in train:
        for f in features(kg, r["text"]):
            n_f[f] += 1
            n_fg.setdefault(f, Counter()).update(r["gold"])
    return {f: {g: c / n_f[f] for g, c in n_fg[f].items()} for f in n_f if n_f[f] >= MIN_SUPPORT}


def apply_map(rules: dict, feats: set[str], threshold: float) -> set[str]:
    out = set()
    for f in feats:
        for g, p in rules.get(f, {}).items():
            if p >= threshold:
                out.add(g)
    return out


def held_back_scores(pairs: list) -> dict:
    from ragmed.knowledge.indexer import score_sets

    half = len(pairs) // 2
    return {"all": score_sets(pairs), "first_half": score_sets(pairs[:half]), "second_half": score_sets(pairs[half:])}


def design_rule_map(kg, train: list[dict], val: list[dict], test: list[dict]) -> dict:
    """Design A (issue 17's first session): rule table "feature -> term" learned on train, threshold on val."""
    from ragmed.knowledge.indexer import score_sets

    rules = learn_map(kg, train)
    val_feats = [features(kg, r["text"]) for r in val]
    sweep = [{"threshold": th, **score_sets([(apply_map(rules, f, th), r["gold"]) for f, r in zip(val_feats, val)])}
             for th in THRESHOLDS]
    ok = [s for s in sweep if s["precision"] >= 0.75] or sweep
    dev = max(ok, key=lambda s: (s["recall"], s["precision"]))
    pairs = [(apply_map(rules, features(kg, r["text"]), dev["threshold"]), r["gold"]) for r in test]
    val_probs = [{} for _ in val]
    for d, f in zip(val_probs, val_feats):
        for x in f:
            for g, p in rules.get(x, {}).items():
                d[g] = max(p, d.get(g, 0.0))
    return {"design": "A: rule table feature -> term (P(term | feature) >= threshold); learned on train, "
                      "threshold = most recall with precision >= 0.75 on val",
            "threshold": dev["threshold"], "train_reports": len(train), "dev_reports": len(val),
            "rules_kept": sum(1 for f in rules for g, p in rules[f].items() if p >= dev["threshold"]),
            "dev": {k: v for k, v in dev.items() if k != "threshold"}, "dev_curve": sweep,
            "held_back": held_back_scores(pairs),
            "dev_false_positive_analysis": fp_analysis(kg, val, val_probs, dev["threshold"])}


def fp_analysis(kg, reports: list[dict], probs: list[dict], threshold: float) -> dict:
    """Why each false positive at ``threshold`` (on dev, out-of-fold): the first matching cause in this order."""
    cats: Counter = Counter()
    by_term: Counter = Counter()
    examples: dict[str, list] = {}
    for r, d in zip(reports, probs):
        g = r["gold"]
        pred = {t for t, p in d.items() if p >= threshold}
        fps = pred - g
        if not fps:
            continue
        ms = kg.link(r["text"])
        names = {m.id: {m.name.lower(), *(s.lower() for s in kg.concept(m.id)["synonyms"])} for m in ms}
        for t in sorted(fps):
            rel = [m for m in ms if t in names[m.id]]
            words = set(t.replace(",", " ").split())
            if not g:
                c = "report indexed 'normal' (no gold term)"
            elif rel and all(m.negated for m in rel):
                c = "term's concept only negated in the report"
            elif rel and all(m.negated or m.uncertain for m in rel):
                c = "term's concept only hedged in the report"
            elif any(words & set(x.replace(",", " ").split()) for x in g):
                c = "granularity: shares a word with a gold term (e.g. emphysema / pulmonary emphysema)"
            elif rel:
                c = "term's concept asserted in the report, indexers left it out"
            else:
                c = "term inferred from other concepts (not linked itself), not indexed"
            cats[c] += 1
            by_term[t] += 1
            if len(examples.setdefault(c, [])) < 3:
                examples[c].append({"term": t, "gold": sorted(g), "report_start": r["text"][:160]})
    return {"threshold": threshold, "false_positives": sum(cats.values()), "causes": cats.most_common(),
            "top_terms": by_term.most_common(15), "examples": examples}


def design_classifier(kg, train: list[dict], test: list[dict], folds: int = 5) -> dict:
    """Design B: one logistic regression per IU term over the linker's output (ragmed.knowledge.indexer). Every
    choice (feature set, C, threshold) by 5-fold cross-validation on the train half; refit on all of it; the
    held-back reports scored once."""
    from ragmed.knowledge.indexer import (IndexTermMapper, choose_threshold, cross_val_proba, mention_features,
                                          precision_recall_curve)

    gold = [r["gold"] for r in train]
    links = [kg.link(r["text"]) for r in train]
    grid = []
    best = None
    for kind in ("concepts", "concepts+status", "full"):
        feats = [mention_features(r["text"], ms, kind) for r, ms in zip(train, links)]
        for C in (0.5, 1.0, 2.0):
            probs = cross_val_proba(feats, gold, folds=folds, C=C)
            curve = precision_recall_curve(probs, gold)
            pt = choose_threshold(curve)
            grid.append({"features": kind, "C": C, "threshold": pt["threshold"], "precision": pt["precision"],
                         "recall": pt["recall"], "f1": pt["f1"]})
            if best is None or (pt["f1"], pt["precision"]) > (best[2]["f1"], best[2]["precision"]):
                best = (kind, C, pt, curve, probs)
    kind, C, pt, curve, probs = best
    mapper = IndexTermMapper(C=C).fit([mention_features(r["text"], ms, kind) for r, ms in zip(train, links)], gold)
    test_probs = mapper.predict_proba([mention_features(r["text"], kg.link(r["text"]), kind) for r in test])
    th = pt["threshold"]
    pairs = [({t for t, p in d.items() if p >= th}, r["gold"]) for d, r in zip(test_probs, test)]
    return {"design": "B: per-term logistic regression over linked concepts (ragmed.knowledge.indexer); feature set, "
                      "C and threshold chosen by 5-fold cross-validation on the train half (threshold: best F1 whose "
                      "precision's 95 % Wilson lower bound >= 0.75); refit on the whole train half",
            "features": kind, "C": C, "threshold": th, "terms_modelled": len(mapper.terms),
            "train_reports": len(train), "dev": {k: v for k, v in pt.items() if k != "threshold"},
            "dev_grid": grid, "dev_curve": curve, "held_back": held_back_scores(pairs),
            "held_back_curve_diagnostic_not_used_for_selection": precision_recall_curve(test_probs,
                                                                                        [r["gold"] for r in test]),
            "dev_false_positive_analysis": fp_analysis(kg, train, probs, th)}


def plot_curves(res: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the [eval] extra
        return
    fig, ax = plt.subplots(figsize=(5, 4))
    for key, lab, st in (("dev_curve", "train half, 5-fold CV (selection)", "-o"),
                         ("held_back_curve_diagnostic_not_used_for_selection", "held-back test split", "--s")):
        c = res[key]
        ax.plot([p["recall"] for p in c], [p["precision"] for p in c], st, ms=3, label=lab)
    hb = res["held_back"]["all"]
    ax.plot([hb["recall"]], [hb["precision"]], "r*", ms=12, label=f"chosen threshold {res['threshold']}")
    ax.axhline(0.75, color="grey", lw=0.8)
    ax.axvline(0.45, color="grey", lw=0.8)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("IU MeSH linking, design B")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def cui_coverage(kg, reports: list[dict]) -> dict:
    from ragmed.knowledge.schema import FINDING_TYPES

    allc = [m for r in reports for m in {x.id: x for x in kg.link(r["text"])}.values()]
    fnd = [m for m in allc if FINDING_TYPES.intersection(m.types)]
    share = lambda ms: round(sum(1 for m in ms if m.cui) / len(ms), 4) if ms else 0.0  # noqa: E731
    from ragmed.knowledge.radiology import CUIS

    hand = set(CUIS.values())
    # the build lists the nodes whose CUI only ragmed's hand-entered radiology CUIs state (no open source's own xref);
    # graphs built before that list existed: a hand-entered CUI counts only beside an HPO member
    only_hand = kg.manifest.get("cui_hand_entered_only")

    def open_xref(m) -> bool:
        if only_hand is not None:
            return m.id not in only_hand
        return m.cui not in hand or "HP" in kg.concept(m.id)["xrefs"]

    def from_sources(ms):  # CUIs from a source's own xrefs only (not ragmed's 35 hand-entered ones)
        ok = [m for m in ms if m.cui and open_xref(m)]
        return round(len(ok) / len(ms), 4) if ms else 0.0

    return {"linked_concepts": len(allc), "with_cui": share(allc), "findings": len(fnd),
            "findings_with_cui": share(fnd),
            "with_cui_from_source_xrefs_only": from_sources(allc),
            "findings_with_cui_from_source_xrefs_only": from_sources(fnd),
            "by_source": dict(Counter(m.source for m in allc).most_common()),
            "cui_by_origin": dict(Counter("none" if not m.cui else "open xref" if open_xref(m) else "hand-entered only"
                                          for m in allc)),
            "hand_entered_only_top": Counter(m.name for m in allc if m.cui and not open_xref(m)).most_common(10),
            "without_cui_top": Counter(m.name for m in allc if not m.cui).most_common(15)}


def evaluate(kg, reports: list[dict], *, fuzzy: bool = False, skip_hedged: bool = False, types=None) -> dict:
    """Protocol metric; with ``skip_hedged`` also hedged mentions ("may represent X") are left out (a variant);
    ``types`` keeps only concepts of these semantic types."""
    tp_pred = n_pred = tp_gold = n_gold = lenient = 0
    fp_names: Counter = Counter()
    fn_terms: Counter = Counter()
    negated = 0
    t0 = time.perf_counter()
    for r in reports:
        mentions = kg.link(r["text"], fuzzy=fuzzy, types=types)
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
    variant = ("findings" if types else "protocol") + (", asserted only (hedged left out)" if skip_hedged else "")
    return {"kg": kg.id, "fuzzy": fuzzy, "variant": variant,
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
    ap.add_argument("--designs", default="AB", help="learned-map designs to run (A: rule table, B: classifier)")
    ap.add_argument("--out", default=str(REPO / "eval" / "results" / "link_iu.json"))
    args = ap.parse_args(argv)
    if not (DATA / "reports" / "iu-xray").exists():
        print(f"IU X-ray data not found under {DATA} (set RAGMED_DATA)", file=sys.stderr)
        return 2
    from ragmed.knowledge import default_graph_path, load_graph

    from ragmed.knowledge.schema import FINDING_TYPES

    reports = load_iu(args.n)
    train, val, test = load_iu(10**6, "train"), load_iu(10**6, "val"), load_iu(10**6, "test")
    results = []
    for path in args.kg or [str(default_graph_path())]:
        kg = load_graph(path)
        rel = os.path.relpath(path, REPO) if Path(path).is_absolute() else path
        runs = [(False, False, None), (False, True, None), (False, False, FINDING_TYPES), (False, True, FINDING_TYPES)]
        for fz, skip, tys in runs + ([(True, False, None)] if args.fuzzy else []):
            res = evaluate(kg, reports, fuzzy=fz, skip_hedged=skip, types=tys)
            res["path"] = rel
            results.append(res)
            print(json.dumps({k: v for k, v in res.items() if not k.startswith("top_")}))
        for name, fn in (("A", lambda: design_rule_map(kg, train, val, test)),
                         ("B", lambda: design_classifier(kg, train + val, test))):
            if name not in args.designs:
                continue
            res = {"kg": kg.id, "path": rel, "variant": "learned map, design " + name, **fn()}
            results.append(res)
            print(json.dumps({k: res[k] for k in ("design", "threshold", "dev", "held_back")}))
            if name == "B":
                plot_curves(res, Path(args.out).with_suffix(".pr_curve.png"))
        cov = {"kg": kg.id, "path": rel, "variant": "UMLS CUI coverage of linked concepts", **cui_coverage(kg, reports)}
        results.append(cov)
        print(json.dumps(cov))
    out = {"command": "python " + " ".join([os.path.relpath(__file__, REPO), *(argv or sys.argv[1:])]),
           "protocol": __doc__.split("\n\n")[1].replace("\n", " "), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
