"""What the knowledge graph adds to report findings: the same finding-extraction task with and without knowledge.

Task: the findings of an IU X-ray report (test split, first 500 as ``link_iu.py``), scored against the report's MeSH
indexing (gold terms as in ``link_iu.py``). The same negation detector is used in every arm.

- ``no knowledge``: the index vocabulary itself (every distinct gold term of the TRAIN split, e.g. "pleural
  effusion", "cardiomegaly", "hernia, hiatal") matched as normalised strings in the report text, non-negated
  mentions only. This is what a system without a knowledge graph can do with the labels alone.
- ``knowledge graph``: the graph's linker (names, synonyms, merged sources, adjective variants, abbreviations),
  findings only (UMLS Disorders group); a finding is correct when its name or a synonym equals a gold term.
- ``knowledge graph + learned map``: ``link_iu.py``'s map learned on the train split (threshold chosen on val).
- ``no knowledge + learned map``: the same learning on the string matches of the first arm (so that the map's
  contribution and the graph's are told apart).
- ``… + classifier``: the same two inputs through ``link_iu.py``'s design B (``ragmed.knowledge.indexer``: one
  logistic regression per term; C = 1, threshold chosen by 5-fold cross-validation on train + val, refitted on them).
  The graph arm uses the linker's features (concepts split by asserted / hedged, matched words, sentence pairs); the
  string arm the non-negated vocabulary matches.

Also, for answers: the knowledge evidence of ``knowledge_evidence(kg, "What are the findings?", [report])`` (the
``[K]`` items an answer would cite): the share of reports with at least one cited concept that matches a gold term,
and the share of cited concepts that are asserted findings of the report (not negated).

    python eval/knowledge_ablation.py [--kg DIR] [--out eval/results/knowledge_ablation.json]

Ask-level arm (``--vqa WORK``): does knowledge-graph context change VQA answers? The committed VQA-RAD split
(``eval/splits/vqa_rad_vlm_seed0.json``): an index of its training images (default pipeline, shipped image encoder
without fitting, SmolLM2 generator with the vote for closed questions), then a seeded sample of its evaluation
questions, each retrieved ONCE (its own image excluded) and answered twice from that same retrieval: with the
default knowledge context (the bundled graph, 3 concepts) and without (``knowledge.max_concepts: 0``). Reported:
closed accuracy, open recall / F1, how many answers differ, how many cite knowledge, and paired differences.

    python eval/knowledge_ablation.py --vqa WORK [--n-closed 60] [--n-open 60] [--out-vqa FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "eval"))

from link_iu import DATA, THRESHOLDS, load_iu  # noqa: E402

from ragmed.knowledge.indexer import score_sets  # noqa: E402


def string_matcher(vocab: set[str]):
    """A lexicon of the vocabulary's normalised strings, matched leftmost-longest with the same negation scope."""
    from ragmed.knowledge.text import negated_tokens, normalise, sentence_ids, tokenize

    lex = {normalise(t): t for t in vocab if normalise(t)}
    maxlen = max((len(k.split()) for k in lex), default=1)

    def match(text: str) -> set[str]:
        toks = tokenize(text)
        norms = [t.norm for t in toks]
        sid = sentence_ids(text, toks)
        found, i = [], 0
        while i < len(toks):
            for L in range(min(maxlen, len(toks) - i), 0, -1):
                if sid[i + L - 1] != sid[i]:
                    continue
                key = " ".join(norms[i:i + L])
                if key in lex:
                    found.append((i, i + L, lex[key]))
                    i += L
                    break
            else:
                i += 1
        neg = negated_tokens(text, toks, [(a, b) for a, b, _ in found])
        return {t for a, b, t in found if not any(neg[a:b])}

    return match


def learned(feats_train, gold_train, feats_val, gold_val, feats_test, min_support: int = 3):
    from collections import Counter

    n_f, n_fg = Counter(), {}
    for fs, g in zip(feats_train, gold_train):
        for f in fs:
            n_f[f] += 1
            n_fg.setdefault(f, Counter()).update(g)
    rules = {f: {g: c / n_f[f] for g, c in n_fg[f].items()} for f in n_f if n_f[f] >= min_support}

    def apply(fs, th):
        return {g for f in fs for g, p in rules.get(f, {}).items() if p >= th}

    sweep = [(th, score_sets([(apply(fs, th), g) for fs, g in zip(feats_val, gold_val)])) for th in THRESHOLDS]
    ok = [s for s in sweep if s[1]["precision"] >= 0.75] or sweep
    th = max(ok, key=lambda s: (s[1]["recall"], s[1]["precision"]))[0]
    return th, [apply(fs, th) for fs in feats_test]


def _vqa_pipelines(work: Path, kg_path: str) -> tuple[Path, Path, Path]:
    """(index, pipeline with knowledge, pipeline without) for the split's training images (built once)."""
    import yaml

    base = yaml.safe_load((REPO / "pipelines" / "default.yaml").read_text())
    base["index"]["fit_image_encoder"] = False  # the same shipped encoder in both arms; no minutes-long fit
    work.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, kn in (("with", {"path": kg_path, "max_concepts": 3}), ("without", {"path": None, "max_concepts": 0})):
        cfg = {**base, "name": f"kg-ablation-{name}", "knowledge": kn}
        (work / f"pipeline_{name}.yaml").write_text(yaml.safe_dump(cfg))
        paths.append(work / f"pipeline_{name}.yaml")
    idx = work / "index"
    if not (idx / "manifest.json").exists() and not (idx / "current").exists():
        split = json.loads((REPO / "eval" / "splits" / "vqa_rad_vlm_seed0.json").read_text())
        keep = set(split["train_images"])
        rows = json.loads((DATA / "vqa-rad" / "train.json").read_text())
        corpus = work / "train_part.json"
        corpus.write_text(json.dumps([r for r in rows if r["image_name"] in keep]))
        from ragmed.config import load_pipeline
        from ragmed.corpus import read_corpus
        from ragmed.pipeline.build import build_from_config

        build_from_config(read_corpus(corpus, format="vqa-rad", images=DATA / "vqa-rad" / "images"), idx,
                          load_pipeline(str(paths[0])), progress=False)
    return idx, paths[0], paths[1]


def vqa_ablation(work: Path, kg_path: str, n_closed: int, n_open: int, seed: int = 0) -> dict:
    import numpy as np

    from ragmed.eval.normalize import normalize_answer
    from ragmed.eval.vqa import item_metrics, short_answer
    from ragmed.io import load_image
    from ragmed.pipeline import Pipeline

    idx, p_with_yaml, p_without_yaml = _vqa_pipelines(work, kg_path)
    split = json.loads((REPO / "eval" / "splits" / "vqa_rad_vlm_seed0.json").read_text())
    ev = set(split["eval_images"])
    rows = [r for r in json.loads((DATA / "vqa-rad" / "train.json").read_text())
            if r["image_name"] in ev and normalize_answer(str(r["answer"]))]
    rng = np.random.default_rng(seed)
    picked = []
    for kind, n in (("CLOSED", n_closed), ("OPEN", n_open)):
        pool = [r for r in rows if r["answer_type"].strip().upper() == kind]
        picked += [pool[i] for i in sorted(rng.choice(len(pool), min(n, len(pool)), replace=False))]
    cache = work / "answers.json"
    done = json.loads(cache.read_text()) if cache.exists() else {}
    p_with, p_without = Pipeline.for_index(idx, p_with_yaml), Pipeline.for_index(idx, p_without_yaml)
    t0 = time.perf_counter()
    for n, r in enumerate(picked):
        key = str(r["qid"])
        if key in done:
            continue
        img = load_image(DATA / "vqa-rad" / "images" / r["image_name"])
        q, task = str(r["question"]).strip(), r["answer_type"].strip().lower()
        ret = p_with.retrieve(img, q, exclude_hashes={img.content_hash})
        a1, a0 = p_with.answer(ret, q, task=task), p_without.answer(ret, q, task=task)
        done[key] = {"type": task, "gold": str(r["answer"]), "with": short_answer(a1), "without": short_answer(a0),
                     "with_text": a1.text, "without_text": a0.text, "knowledge_cited": len(a1.knowledge)}
        if (n + 1) % 10 == 0:
            cache.write_text(json.dumps(done))
            print(f"vqa ablation {n + 1}/{len(picked)} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    cache.write_text(json.dumps(done))
    res = {}
    for task in ("closed", "open"):
        items = [done[str(r["qid"])] for r in picked if done[str(r["qid"])]["type"] == task]
        m = {arm: [item_metrics(d[arm], d["gold"], task) for d in items] for arm in ("with", "without")}
        key = "closed_accuracy" if task == "closed" else "open_recall"
        diff = np.array([a[key] - b[key] for a, b in zip(m["with"], m["without"])])
        boot = [float(diff[rng.integers(0, len(diff), len(diff))].mean()) for _ in range(1000)] if len(diff) else [0]
        res[task] = {"questions": len(items),
                     **{f"{arm}_knowledge_{k}": round(float(np.mean([x[k] for x in m[arm]])), 4)
                        for arm in ("with", "without") for k in m[arm][0] if k != "accuracy"},
                     "short_answer_differs": sum(d["with"] != d["without"] for d in items),
                     "answer_text_differs": sum(d["with_text"] != d["without_text"] for d in items),
                     "answers_citing_knowledge": sum(1 for d in items if d["knowledge_cited"]),
                     f"paired_difference_{key}": round(float(diff.mean()), 4) if len(diff) else 0.0,
                     "paired_difference_95ci": [round(float(np.percentile(boot, 2.5)), 4),
                                                round(float(np.percentile(boot, 97.5)), 4)]}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kg", default=None, help="knowledge directory (default: the bundled graph)")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--out", default=str(REPO / "eval" / "results" / "knowledge_ablation.json"))
    ap.add_argument("--vqa", default=None, metavar="WORK", help="run the ask-level VQA-RAD arm in WORK instead")
    ap.add_argument("--n-closed", type=int, default=60)
    ap.add_argument("--n-open", type=int, default=60)
    ap.add_argument("--out-vqa", default=str(REPO / "eval" / "results" / "knowledge_ablation_vqa.json"))
    args = ap.parse_args(argv)
    if args.vqa:
        from ragmed.knowledge import default_graph_path

        t0 = time.perf_counter()
        kg_path = str(Path(args.kg or default_graph_path()).resolve())
        res = vqa_ablation(Path(args.vqa), kg_path, args.n_closed, args.n_open)
        cmd = ["WORK" if a == args.vqa else a for a in (argv or sys.argv[1:])]
        out = {"command": "python " + " ".join([os.path.relpath(__file__, REPO), *cmd]),
               "protocol": next(p for p in __doc__.split("\n\n") if p.startswith("Ask-level")).replace("\n", " "),
               "results": res,
               "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps(out, indent=2))
        Path(args.out_vqa).write_text(json.dumps(out, indent=2) + "\n")
        return 0
    if not (DATA / "reports" / "iu-xray").exists():
        print(f"IU X-ray data not found under {DATA} (set RAGMED_DATA)", file=sys.stderr)
        return 2
    from link_iu import features

    from ragmed.knowledge import default_graph_path, knowledge_evidence, load_graph
    from ragmed.knowledge.schema import FINDING_TYPES

    kg = load_graph(args.kg or default_graph_path())
    test, train, val = load_iu(args.n), load_iu(10**6, "train"), load_iu(10**6, "val")
    vocab = {g for r in train for g in r["gold"]}
    match = string_matcher(vocab)
    t0 = time.perf_counter()
    arms = {}
    arms["no knowledge (index vocabulary as strings)"] = score_sets([(match(r["text"]), r["gold"]) for r in test])
    pairs = []
    for r in test:
        pred = set()
        for m in kg.link(r["text"], types=FINDING_TYPES):
            if m.negated:
                continue
            c = kg.concept(m.id)
            names = {c["name"].lower(), *(s.lower() for s in c["synonyms"])}
            pred |= (names & r["gold"]) or {c["name"].lower()}
        pairs.append((pred, r["gold"]))
    arms["knowledge graph (findings)"] = score_sets(pairs)
    f = {k: [features(kg, r["text"]) for r in rs] for k, rs in (("train", train), ("val", val), ("test", test))}
    th, pred = learned(f["train"], [r["gold"] for r in train], f["val"], [r["gold"] for r in val], f["test"])
    arms["knowledge graph + learned map"] = {**score_sets(list(zip(pred, [r["gold"] for r in test]))), "threshold": th}
    s = {k: [match(r["text"]) for r in rs] for k, rs in (("train", train), ("val", val), ("test", test))}
    th, pred = learned(s["train"], [r["gold"] for r in train], s["val"], [r["gold"] for r in val], s["test"])
    arms["no knowledge + learned map"] = {**score_sets(list(zip(pred, [r["gold"] for r in test]))), "threshold": th}
    from ragmed.knowledge.indexer import (IndexTermMapper, choose_threshold, cross_val_proba, mention_features,
                                          precision_recall_curve)

    half = train + val
    gold_half = [r["gold"] for r in half]
    for name, fx in (("knowledge graph + classifier", lambda r: mention_features(r["text"], kg.link(r["text"]))),
                     ("no knowledge + classifier", lambda r: {"a:" + t: 1.0 for t in match(r["text"])})):
        fh = [fx(r) for r in half]
        pt = choose_threshold(precision_recall_curve(cross_val_proba(fh, gold_half), gold_half))
        m = IndexTermMapper().fit(fh, gold_half)
        pred = m.predict([fx(r) for r in test], pt["threshold"])
        arms[name] = {**score_sets(list(zip(pred, [r["gold"] for r in test]))), "threshold": pt["threshold"],
                      "dev_precision": pt["precision"], "dev_recall": pt["recall"]}
    # knowledge evidence an answer would cite
    hit = cited = asserted = 0
    for r in test:
        items = knowledge_evidence(kg, "What are the findings?", [r["text"]], max_concepts=5)
        cited += len(items)
        ok = False
        for k in items:
            c = kg.concept(k.concept_id)
            names = {c["name"].lower(), *(x.lower() for x in c["synonyms"])}
            ok = ok or bool(names & r["gold"])
            asserted += int(not k.negated)
        hit += int(ok)
    with_gold = sum(1 for r in test if r["gold"])
    evidence = {"reports": len(test), "reports_with_gold": with_gold, "cited_concepts": cited,
                "reports_citing_a_gold_finding": hit,
                "share_of_reports_with_gold_citing_one": round(hit / with_gold, 4) if with_gold else 0.0,
                "cited_asserted_share": round(asserted / cited, 4) if cited else 0.0}
    out = {"command": "python " + " ".join([os.path.relpath(__file__, REPO), *(argv or sys.argv[1:])]),
           "kg": kg.id, "protocol": __doc__.split("\n\n")[1].replace("\n", " "), "arms": arms,
           "knowledge_evidence": evidence, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
