"""Hybrid retrieval pieces: a BM25 channel over the report text and per-domain score calibration.

BM25 (bm25s, English stop words) is built once per index version into ``<version>/bm25/`` (bm25s' own NumPy/JSON
format, no pickles) plus ``docs.json`` (case id and domain per document). An index built without it gets one built
in memory on first use.

Calibration (``<version>/retrieval_calibration.json``): for every domain and channel, the distribution of the best
score a case reaches against the *other* cases of its domain (leave-one-out; for text channels the case's first
sentence stands in for a question). A raw score becomes its quantile position in that distribution, in [0, 1]:
0.5 means "as similar as a typical in-domain nearest neighbour". That makes channels and domains comparable:
cross-domain merging, calibrated score fusion and the gap selector all use it.
"""
from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import numpy as np

from ragmed.index.store import Hit

QUANTILES = np.linspace(0.0, 1.0, 21)
SAMPLE = 200


def _tokenize(texts: list[str]):
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", show_progress=False, return_ids=False)


class BM25Channel:
    """BM25 over the indexed cases' report text; ``search(question, k, domains)`` -> hits best first."""

    def __init__(self, retriever, case_ids: list[str], domains: list[str]):
        self.retriever, self.case_ids, self.domains = retriever, list(case_ids), np.asarray(domains)
        self._lock = threading.Lock()

    @classmethod
    def build(cls, store) -> "BM25Channel | None":
        import bm25s

        ids, texts, doms = [], [], []
        for cid, text, dom in store.texts():
            ids.append(cid)
            texts.append(text)
            doms.append(dom)
        if not ids:
            return None
        retriever = bm25s.BM25()
        retriever.index(_tokenize(texts), show_progress=False)
        return cls(retriever, ids, doms)

    def save(self, version_dir: str | Path) -> None:
        d = Path(version_dir) / "bm25"
        tmp = Path(version_dir) / ".bm25.tmp"
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        self.retriever.save(str(tmp), show_progress=False)
        (tmp / "docs.json").write_text(json.dumps({"case_ids": self.case_ids, "domains": self.domains.tolist()}))
        shutil.rmtree(d, ignore_errors=True)
        os.replace(tmp, d)

    @classmethod
    def load(cls, version_dir: str | Path) -> "BM25Channel | None":
        import bm25s

        d = Path(version_dir) / "bm25"
        if not (d / "docs.json").exists():
            return None
        docs = json.loads((d / "docs.json").read_text())
        retriever = bm25s.BM25.load(str(d), allow_pickle=False, show_progress=False)
        return cls(retriever, docs["case_ids"], docs["domains"])

    def search(self, query: str, k: int, *, domains: list[str] | None = None, exclude_row: int | None = None
               ) -> list[Hit]:
        toks = _tokenize([query])
        if not toks or not toks[0]:
            return []
        mask = None
        if domains is not None:
            mask = np.isin(self.domains, domains).astype(np.float32)
        if exclude_row is not None:
            mask = np.ones(len(self.case_ids), dtype=np.float32) if mask is None else mask
            mask[exclude_row] = 0.0
        n = len(self.case_ids) if mask is None else int(mask.sum())
        if n == 0:
            return []
        with self._lock:
            docs, scores = self.retriever.retrieve(toks, k=min(k, n), show_progress=False, weight_mask=mask)
        out = []
        for j, s in zip(docs[0], scores[0]):
            if s > 0:
                out.append(Hit(self.case_ids[int(j)], float(s), "bm25", str(self.domains[int(j)])))
        return out


def _first_sentence(text: str) -> str:
    parts = re.split(r"(?<=[.?!])\s+|(?=\bQ:\s)", text)
    parts = [p.strip() for p in parts if len(p.strip()) > 3]
    s = parts[0] if parts else text[:200]
    m = re.match(r"Q:\s*(.+?)\s*A:", s)  # VQA corpora: the first indexed question itself
    return m.group(1) if m else s


def calibrate_channels(store, *, text_encoder=None, image_encoder_space: str | None = None, bm25=None,
                       n: int = SAMPLE, seed: int = 0) -> dict:
    """Per domain and channel, the quantiles (QUANTILES) of leave-one-out best scores (see the module docstring)."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict] = {}
    for dom in store.domains:
        res: dict[str, dict] = {}
        # image → image and image → report
        img_ids, img_vecs = store.vectors(dom, "image")
        if len(img_ids) >= 3:
            pick = rng.choice(len(img_ids), size=min(n, len(img_ids)), replace=False)
            meta = {r["vec_id"]: r["case_id"] for r in store.image_rows(dom)}
            q = np.ascontiguousarray(img_vecs[pick])
            hits = store.search("image", q, 5, domains=[dom])
            res["image-image"] = _best_other(hits, [meta.get(int(img_ids[i])) for i in pick])
            text_space = store.encoders.get("text", {}).get("space")
            if image_encoder_space is not None and image_encoder_space == text_space:
                hits = store.search("text", q, 5, domains=[dom])
                res["image-report"] = _best_other(hits, [meta.get(int(img_ids[i])) for i in pick])
        rows = store.texts(dom)
        if len(rows) >= 3:
            pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
            queries = [_first_sentence(rows[i][1]) for i in pick]
            own = [rows[i][0] for i in pick]
            if text_encoder is not None and "text" in store.encoders:
                hits = store.search("text", text_encoder.encode_texts(queries), 5, domains=[dom])
                res["question-report"] = _best_other(hits, own)
            if bm25 is not None:
                hits = [bm25.search(qt, 5, domains=[dom]) for qt in queries]
                res["bm25"] = _best_other(hits, own)
        out[dom] = {ch: v for ch, v in res.items() if v is not None}
    return {"quantiles": QUANTILES.round(3).tolist(), "domains": out}


def _best_other(hits: list[list[Hit]], own: list[str | None]) -> dict | None:
    best = []
    for hs, o in zip(hits, own):
        for h in hs:
            if h.case_id != o:
                best.append(h.score)
                break
    if len(best) < 3:
        return None
    return {"q": np.quantile(np.asarray(best), QUANTILES).round(6).tolist(), "n": len(best)}


class Calibrator:
    """Raw score → calibrated score in [0, 1] (quantile position) for a (domain, channel); falls back to the pooled
    distribution of that channel over all domains, then to the raw score clipped to [0, 1]."""

    def __init__(self, data: dict):
        self.data = data or {"domains": {}}
        self.levels = np.asarray(self.data.get("quantiles", QUANTILES))
        pooled: dict[str, list] = {}
        for chans in self.data.get("domains", {}).values():
            for ch, v in chans.items():
                pooled.setdefault(ch, []).append(np.asarray(v["q"]))
        self.pooled = {ch: np.mean(np.stack(qs), axis=0) for ch, qs in pooled.items()}

    def __call__(self, domain: str, channel: str, score: float) -> float:
        q = self.data.get("domains", {}).get(domain, {}).get(channel)
        qs = np.asarray(q["q"]) if q else self.pooled.get(channel)
        if qs is None:
            return float(min(1.0, max(0.0, score)))
        # strictly increasing x for interp: tiny ramp breaks ties between equal quantiles
        x = qs + np.arange(len(qs)) * 1e-9
        if score >= x[-1]:
            return 1.0
        return float(np.interp(score, x, self.levels, left=0.0))

    def floors(self, store=None) -> dict[str, dict]:
        """Per channel, the evidence floor (``{"floor", "percentile", "median", "n"}``): from this artefact, else
        (an index built before the floors moved here) from the index manifest's ``calibration``."""
        if "floors" in self.data:
            return self.data["floors"]
        return (store.manifest.get("calibration", {}) if store is not None else {})

    def save(self, version_dir: str | Path) -> None:
        p = Path(version_dir) / "retrieval_calibration.json"
        tmp = p.with_name(".retrieval_calibration.tmp.json")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, p)

    @classmethod
    def load(cls, version_dir: str | Path) -> "Calibrator | None":
        p = Path(version_dir) / "retrieval_calibration.json"
        return cls(json.loads(p.read_text())) if p.exists() else None
