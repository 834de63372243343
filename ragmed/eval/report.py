"""Report-generation metrics behind ``ragmed eval report``: BLEU-1..4, ROUGE-L and a clinical-finding F1.

* BLEU-n: corpus BLEU (``nltk.translate.bleu_score.corpus_bleu``, uniform weights over 1..n-grams, no smoothing),
  on lower-cased word tokens (a regex tokenizer: nltk's ``word_tokenize`` would need the downloadable punkt data).
* ROUGE-L: mean F-measure of ``rouge_score``'s ``rougeL`` (longest common subsequence), no stemming.
* METEOR is **not** computed: nltk's METEOR needs the WordNet corpus, which no package on PyPI ships for offline
  use (``wn`` and nltk download it at run time); a METEOR without its synonym stage would be a different metric.
* Clinical-finding F1: each report is linked to knowledge-graph concepts with the concept linker
  (``KnowledgeGraph.link(text)``, negation-aware); a report's findings are the set of (concept id, present|absent)
  pairs; micro precision / recall / F1 over all reports (a finding counts when both its concept and its polarity
  agree), plus the same on present findings only. Skipped, with the reason recorded, when no knowledge graph is
  available.

None of these touches the network (tests check it with sockets disabled).
"""
from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path
from typing import Any

from ragmed.errors import ConfigError, CorpusError

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
TEXT_KEYS = ("report", "prediction", "text", "generated", "reference", "findings")
METEOR_UNAVAILABLE = ("METEOR not computed: it needs the WordNet corpus, which no PyPI package ships for offline "
                      "use (nltk and wn download it at run time)")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(str(text or "").lower())


def bleu_scores(predictions: list[str], references: list[str], max_n: int = 4) -> dict[str, float]:
    import warnings

    from nltk.translate.bleu_score import corpus_bleu

    hyps = [tokenize(p) for p in predictions]
    refs = [[tokenize(r)] for r in references]
    out = {}
    for n in range(1, max_n + 1):
        with warnings.catch_warnings():  # nltk warns when an n-gram order has no overlap (BLEU is then 0)
            warnings.simplefilter("ignore")
            out[f"bleu_{n}"] = float(corpus_bleu(refs, hyps, weights=tuple([1.0 / n] * n)))
    return out


def rouge_l(predictions: list[str], references: list[str]) -> list[float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return [float(scorer.score(r, p)["rougeL"].fmeasure) for p, r in zip(predictions, references)]


def findings(linker, text: str) -> set[tuple[str, bool]]:
    """(concept id, present) pairs the linker finds in ``text``; a concept both affirmed and negated keeps both.
    Only findings and diseases count (the linker also reports anatomy, procedures and views: not findings)."""
    from ragmed.knowledge.schema import FINDING_TYPES

    return {(c.id, not bool(c.negated)) for c in linker.link(text)
            if not getattr(c, "types", None) or FINDING_TYPES.intersection(c.types)}


def finding_scores(pred_sets: list[set], ref_sets: list[set]) -> dict[str, float]:
    """Micro precision / recall / F1 over (concept, polarity) pairs, and over present findings only."""
    def prf(ps, rs):
        tp = sum(len(p & r) for p, r in zip(ps, rs))
        npred = sum(len(p) for p in ps)
        nref = sum(len(r) for r in rs)
        prec = tp / npred if npred else 0.0
        rec = tp / nref if nref else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        return prec, rec, f1

    p, r, f = prf(pred_sets, ref_sets)
    pp, pr, pf = prf([{x for x in s if x[1]} for s in pred_sets], [{x for x in s if x[1]} for s in ref_sets])
    return {"finding_precision": p, "finding_recall": r, "finding_f1": f,
            "finding_present_precision": pp, "finding_present_recall": pr, "finding_present_f1": pf}


def load_linker(path: str | Path | None = None):
    """The knowledge graph's concept linker, or (None, reason)."""
    try:
        from ragmed.knowledge import default_graph_path, load_graph
    except ImportError as e:
        return None, f"finding F1 not computed: the knowledge graph module is not available ({e})"
    try:
        kg = load_graph(path or default_graph_path())
    except Exception as e:  # missing graph files etc.: report, do not fail the other metrics
        return None, f"finding F1 not computed: cannot load the knowledge graph ({str(e).splitlines()[0][:200]})"
    if not hasattr(kg, "link"):
        return None, "finding F1 not computed: the knowledge graph has no concept linker (link)"
    return kg, None


def read_reports(path: str | Path) -> list[tuple[str | None, str]]:
    """(id, text) rows from JSONL / JSON (a list, or a dict of lists such as r2gen's split file: all rows) / CSV
    (an ``id`` column and a ``report``/``text``/``prediction``… column) / TXT (one report per line)."""
    p = Path(path)
    if not p.exists():
        raise CorpusError("report file not found", path=str(p))
    suf = p.suffix.lower()
    try:
        if suf in (".jsonl", ".ndjson"):
            rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        elif suf == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
            rows = data if isinstance(data, list) else [r for v in data.values() if isinstance(v, list) for r in v]
        elif suf in (".csv", ".tsv"):
            with p.open(encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t" if suf == ".tsv" else ","))
        else:
            return [(None, line.strip()) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as e:
        raise CorpusError(f"cannot read reports: {e}", path=str(p)) from e
    out = []
    for i, r in enumerate(rows, start=1):
        if isinstance(r, str):
            out.append((None, r))
            continue
        if not isinstance(r, dict):
            raise CorpusError(f"row {i} is not an object", path=str(p))
        key = next((k for k in TEXT_KEYS if isinstance(r.get(k), str)), None)
        if key is None:
            raise CorpusError(f"row {i} has none of the text fields {', '.join(TEXT_KEYS)}", path=str(p))
        rid = r.get("id", r.get("case_id", r.get("uid")))
        out.append((str(rid) if rid is not None else None, r[key]))
    return out


def pair_reports(pred: list[tuple[str | None, str]], ref: list[tuple[str | None, str]]):
    """Pairs by id when both files have ids, else by order (then the counts must agree). Returns (pairs, skipped)."""
    skipped: list[dict[str, Any]] = []
    if all(i is not None for i, _ in pred) and all(i is not None for i, _ in ref):
        refs = dict(ref)
        pairs = []
        for i, t in pred:
            if i in refs:
                pairs.append((i, t, refs[i]))
            else:
                skipped.append({"id": i, "reason": "no reference report with this id"})
        return pairs, skipped
    if len(pred) != len(ref):
        raise ConfigError(f"{len(pred)} predictions but {len(ref)} references, and no ids to pair them by")
    return [(i or r_i or str(n), p, r) for n, ((i, p), (r_i, r)) in enumerate(zip(pred, ref), start=1)], skipped


def evaluate_reports(pred_path: str | Path, ref_path: str | Path, *, kg_path: str | Path | None = None,
                     linker=None, predictions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    from ragmed.version import __version__
    from ragmed.eval.results import make_result

    t0 = time.perf_counter()
    pairs, skipped = pair_reports(read_reports(pred_path), read_reports(ref_path))
    kept = []
    for rid, p, r in pairs:
        if not tokenize(r):
            skipped.append({"id": rid, "reason": "empty reference report"})
        else:
            kept.append((rid, p, r))
    unavailable = {"meteor": METEOR_UNAVAILABLE}
    if not kept:
        raise ConfigError("no report pairs to evaluate")
    ids, preds, refs = [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept]
    corpus = bleu_scores(preds, refs)
    rl = rouge_l(preds, refs)
    per_item: list[dict[str, float]] = [{"rouge_l": v} for v in rl]
    if linker is None:
        linker, why = load_linker(kg_path)
        if why:
            unavailable["finding_f1"] = why
    if linker is not None:
        ps = [findings(linker, t) for t in preds]
        rs = [findings(linker, t) for t in refs]
        corpus.update(finding_scores(ps, rs))
        for m, pset, rset in zip(per_item, ps, rs):
            if pset or rset:
                tp = len(pset & rset)
                m["finding_f1_per_report"] = 2 * tp / (len(pset) + len(rset))
    if predictions is not None:
        for rid, p, r, m in zip(ids, preds, refs, per_item):
            predictions.append({"id": rid, "prediction": p, "gold": r, "metrics": m})
    config = {"pred": str(pred_path), "ref": str(ref_path), "tokenizer": "lower-case regex words",
              "bleu": "nltk corpus_bleu, uniform n-gram weights, no smoothing", "rouge": "rouge_score rougeL F, no stemming",
              "knowledge_graph": getattr(linker, "id", None) if linker is not None else None,
              "ragmed_version": __version__}
    res = make_result("report", per_item, {"by_question_type": [None] * len(per_item), "by_organ": [None] * len(per_item),
                                           "by_domain": [None] * len(per_item)},
                      skipped, config, time.perf_counter() - t0, extra_metrics=corpus)
    res["unavailable_metrics"] = unavailable
    return res
