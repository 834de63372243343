"""Retrieval metrics and the retrieval evaluator behind ``ragmed eval retrieval``.

Semantics (eval/README.md):

* a retrieved case is **relevant** when its value in every ``match`` column equals the query's: values are trimmed
  and case-folded, an empty value never matches, and ``;``-separated values match when they overlap;
* the **query itself** (same case id, or an image with the same content hash) and, with ``exclude_same=COL``, every
  case sharing the query's value in COL are removed *before* the top-K cut (leave-one-patient-out);
* precision@K = relevant in top K ÷ K; recall@K = relevant in top K ÷ all relevant cases left in the index;
  hit@K = 1 if any relevant in top K; MRR = 1 / rank of the first relevant within the top 100 (0 if none);
  nDCG@K with binary relevance. A query with no relevant case left in the index is skipped (recall undefined).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS = ("image-image", "image-report", "report-image", "question-image", "question-report")
MRR_DEPTH = 100
ORGAN_COLUMNS = ("image_organ", "organ", "location", "body_part")


# ----------------------------------------------------------------------------------------------- pure functions
def split_values(value: Any) -> set[str]:
    """``" Lung; HEART ;"`` → ``{"lung", "heart"}``; empty / None → empty set."""
    if value is None:
        return set()
    return {v.strip().casefold() for v in str(value).split(";") if v.strip()}


def values_match(a: Any, b: Any) -> bool:
    """Trimmed, case-folded equality; empty never matches; ``;``-separated values match on overlap."""
    return bool(split_values(a) & split_values(b))


def is_relevant(query: dict[str, Any], candidate: dict[str, Any], match: list[str]) -> bool:
    return bool(match) and all(values_match(query.get(c), candidate.get(c)) for c in match)


def excluded_ids(query: dict[str, Any], cases: dict[str, dict[str, Any]], *, self_ids: set[str],
                 exclude_same: list[str] | None = None) -> set[str]:
    """Case ids removed before the top-K cut: the query itself (``self_ids``: its id and every case holding an image
    with the query image's content hash) and every case sharing the query's value in an ``exclude_same`` column."""
    out = set(self_ids)
    for col in exclude_same or ():
        qv = split_values(query.get(col))
        if not qv:
            continue
        out |= {cid for cid, c in cases.items() if qv & split_values(c.get(col))}
    return out


def ranking_metrics(relevance: list[bool], n_relevant: int, ks: list[int]) -> dict[str, float]:
    """Metrics of one ranked list (already filtered, best first) given the number of relevant items overall."""
    if n_relevant <= 0:
        raise ValueError("ranking_metrics needs at least one relevant item")
    out: dict[str, float] = {}
    for k in ks:
        top = relevance[:k]
        hits = sum(top)
        out[f"precision@{k}"] = hits / k
        out[f"recall@{k}"] = hits / n_relevant
        out[f"hit@{k}"] = 1.0 if hits else 0.0
        dcg = sum(1.0 / math.log2(i + 2) for i, r in enumerate(top) if r)
        idcg = sum(1.0 / math.log2(i + 2) for i in range(min(k, n_relevant)))
        out[f"ndcg@{k}"] = dcg / idcg
    first = next((i for i, r in enumerate(relevance[:MRR_DEPTH]) if r), None)
    out["mrr"] = 0.0 if first is None else 1.0 / (first + 1)
    return out


def rank_and_filter(ranked_ids: list[str], excluded: set[str], depth: int) -> list[str]:
    """Drop excluded ids (keeping order and first occurrence) and cut to ``depth``."""
    out, seen = [], set()
    for cid in ranked_ids:
        if cid in excluded or cid in seen:
            continue
        seen.add(cid)
        out.append(cid)
        if len(out) >= depth:
            break
    return out


def parse_ks(text: str | None) -> list[int]:
    if not text:
        return [1, 5, 10]
    ks = sorted({int(x) for x in str(text).replace(" ", "").split(",") if x})
    if not ks or ks[0] < 1:
        raise ValueError("--k takes positive integers, e.g. 1,5,10")
    return ks


# ----------------------------------------------------------------------------------------------- queries
@dataclass
class Query:
    id: str
    columns: dict[str, Any]
    text: str = ""
    image: str | None = None  # absolute path
    case_id: str | None = None  # the id this query would have as an indexed case
    question_type: str | None = None
    organ: str | None = None


def vqa_case_id(image_name: str) -> str:
    """The case id ``ragmed.corpus.vqa.read_vqa`` gives the image's case."""
    return Path(image_name).with_suffix("").as_posix().replace("/", "_")


def load_queries(path: str | Path, task: str, *, images: str | Path | None = None, fmt: str | None = None,
                 language: str = "en") -> tuple[list[Query], list[dict[str, Any]]]:
    """Queries for ``task``: question tasks read VQA-RAD / SLAKE; the others a corpus manifest (or a VQA set, one
    query per image)."""
    p = Path(path)
    skipped: list[dict[str, Any]] = []
    if task.startswith("question-"):
        from ragmed.corpus.vqa import read_qa

        items = read_qa(p, format=fmt if fmt in ("vqa-rad", "slake") else None, language=language)
        img_root = Path(images) if images else p.parent / "images"
        out = []
        for it in items:
            cols = {"qid": it.qid, "image_name": it.image, "question": it.question, "answer": it.answer,
                    "answer_type": it.answer_type, "question_type": it.question_type, "organ": it.organ,
                    "image_organ": it.organ, **it.extra}
            out.append(Query(id=it.qid, columns=cols, text=it.question, image=str(img_root / it.image),
                             case_id=vqa_case_id(it.image), question_type=it.question_type or None,
                             organ=it.organ or None))
        return out, skipped
    from ragmed.corpus import read_corpus

    corpus = read_corpus(p, format=fmt, images=images, language=language)
    skipped += [{"id": s.case_id, "reason": s.reason} for s in corpus.skipped]
    out = []
    for c in corpus.cases:
        cols = {"id": c.id, "case_id": c.id, "split": c.split, **c.metadata}
        organ = next((str(c.metadata[k]) for k in ORGAN_COLUMNS if c.metadata.get(k)), None)
        out.append(Query(id=c.id, columns=cols, text=c.text, image=c.images[0] if c.images else None,
                         case_id=c.id, organ=organ, question_type=c.metadata.get("question_type")))
    return out, skipped


def case_columns(record) -> dict[str, Any]:
    """The columns of an indexed case that ``--match`` / ``--exclude-same`` can name."""
    return {"id": record.case_id, "case_id": record.case_id, "split": record.split, "domain": record.domain,
            **record.metadata}


# ----------------------------------------------------------------------------------------------- evaluator
@dataclass
class RetrievalEval:
    task: str
    match: list[str]
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    exclude_same: list[str] = field(default_factory=list)
    exclude_query_image: bool = True

    def run(self, pipeline, queries: list[Query], *, progress: bool = False,
            predictions: list[dict[str, Any]] | None = None) -> tuple[list[dict], dict[str, list], list[dict]]:
        """Per-item metrics, breakdown groups and skipped items. ``pipeline``: a ragmed Pipeline (its store and
        encoders are used; the encoders are checked against the index's)."""
        from ragmed.errors import RagmedError

        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; one of {', '.join(TASKS)}")
        store = pipeline.store
        cases = {r.case_id: r for r in store.iter_cases()}
        cols = {cid: case_columns(r) for cid, r in cases.items()}
        hash_to_cases: dict[str, set[str]] = {}
        for cid, r in cases.items():
            for im in r.images:
                hash_to_cases.setdefault(im["content_hash"], set()).add(cid)
        query_kind, index_kind = {"image-image": ("image", "image"), "image-report": ("image", "text"),
                                  "report-image": ("text", "image"), "question-image": ("text", "image"),
                                  "question-report": ("text", "text")}[self.task]
        self._check_channel(pipeline, store, query_kind, index_kind)
        # a query that is not an indexed case belongs to the index's only domain, if it has one (no router)
        single_domain = store.domains[0] if len(store.domains) == 1 else None
        per_item, skipped = [], []
        groups: dict[str, list] = {"by_question_type": [], "by_organ": [], "by_domain": []}
        from tqdm import tqdm

        for q in tqdm(queries, desc=f"eval {self.task}", disable=not progress, unit="query"):
            try:
                vec, qhash = self._encode(pipeline, q, query_kind)
            except RagmedError as e:
                skipped.append({"id": q.id, "reason": str(e)})
                continue
            if vec is None:
                skipped.append({"id": q.id, "reason": f"query has no {'image' if query_kind == 'image' else 'text'}"})
                continue
            self_ids = {q.case_id} if q.case_id else set()
            if self.exclude_query_image and qhash:
                self_ids |= hash_to_cases.get(qhash, set())
            excl = excluded_ids(q.columns, cols, self_ids=self_ids, exclude_same=self.exclude_same)
            relevant = {cid for cid, c in cols.items() if cid not in excl and is_relevant(q.columns, c, self.match)}
            if not relevant:
                skipped.append({"id": q.id, "reason": "no relevant case left in the index (after exclusions) for "
                                                      f"match {','.join(self.match)}"})
                continue
            depth = max(MRR_DEPTH, max(self.ks))
            hits = store.search(index_kind, vec, depth + len(excl & set(cols)), channel=self.task)[0]
            ranked = rank_and_filter([h.case_id for h in hits], excl, depth)
            rel = [cid in relevant for cid in ranked]
            m = ranking_metrics(rel, len(relevant), self.ks)
            per_item.append(m)
            groups["by_question_type"].append(q.question_type)
            groups["by_organ"].append(q.organ)
            groups["by_domain"].append(cases[q.case_id].domain if q.case_id in cases
                                       else q.columns.get("domain") or single_domain)
            if predictions is not None:
                kmax = max(self.ks)
                predictions.append({"id": q.id, "prediction": ranked[:kmax], "gold": sorted(relevant)[:100],
                                    "n_relevant": len(relevant), "correct": bool(any(rel[:kmax])),
                                    "evidence_ids": ranked[:kmax], "excluded": len(excl)})
        return per_item, groups, skipped

    @staticmethod
    def _check_channel(pipeline, store, query_kind: str, index_kind: str) -> None:
        from ragmed.errors import ConfigError

        if index_kind == "image" and "image" not in store.encoders:
            raise ConfigError("this index has no image vectors; choose a *-report task")
        enc = pipeline.image_encoder if query_kind == "image" else pipeline.text_encoder
        if enc is None:
            raise ConfigError(f"the pipeline has no {query_kind} encoder")
        index_space = store.encoders.get(index_kind, {}).get("space")
        if query_kind != index_kind and getattr(enc, "space", None) != index_space:
            raise ConfigError(f"cross-modal task needs a shared space: the {query_kind} encoder {enc.id!r} is in "
                              f"space {getattr(enc, 'space', None)!r}, the index's {index_kind} vectors in "
                              f"{index_space!r}")
        if query_kind == index_kind:
            store.check_encoder(index_kind, enc)

    @staticmethod
    def _encode(pipeline, q: Query, kind: str):
        if kind == "image":
            if not q.image:
                return None, None
            from ragmed.io import load_image

            img = load_image(q.image)
            return pipeline.image_encoder.encode_images([img]), img.content_hash
        qhash = None
        if q.image and Path(q.image).exists():
            from ragmed.io import load_image

            try:
                qhash = load_image(q.image).content_hash
            except Exception:  # the query's own image only serves the exclusion rule here
                qhash = None
        if not q.text:
            return None, qhash
        return pipeline.text_encoder.encode_texts([q.text]), qhash


def evaluate_retrieval(index: str | Path, queries_path: str | Path, task: str, match: list[str], *,
                       exclude_same: list[str] | None = None, ks: list[int] | None = None,
                       pipeline: str | Path | None = None, images: str | Path | None = None,
                       fmt: str | None = None, exclude_query_image: bool = True, progress: bool = False,
                       predictions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run a retrieval evaluation and return the schema-1 result object."""
    from ragmed.version import __version__
    from ragmed.eval.results import make_result
    from ragmed.pipeline import Pipeline

    t0 = time.perf_counter()
    p = Pipeline.for_index(index, pipeline)
    qs, skipped = load_queries(queries_path, task, images=images, fmt=fmt)
    ev = RetrievalEval(task=task, match=list(match), ks=ks or [1, 5, 10], exclude_same=list(exclude_same or []),
                       exclude_query_image=exclude_query_image)
    per_item, groups, sk = ev.run(p, qs, progress=progress, predictions=predictions)
    store = p.store
    config = {"task": task, "match": list(match), "exclude_same": list(exclude_same or []), "k": ev.ks,
              "mrr_depth": MRR_DEPTH, "exclude_query_image": exclude_query_image,
              "queries": str(queries_path), "n_queries": len(qs),
              "index": {"path": str(index), "version": store.version_dir.name, "factory": store.manifest.get("factory"),
                        "domains": store.manifest.get("domains"), "n_cases": store.count("cases"),
                        "search_params": store.manifest.get("search_params")},
              "pipeline": {"name": p.config.name, "source": p.config.source},
              "encoders": {k: v.get("id") for k, v in store.encoders.items()},
              "generator": None, "ragmed_version": __version__}
    return make_result("retrieval", per_item, groups, skipped + sk, config, time.perf_counter() - t0)
