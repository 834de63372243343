"""Retrieval calibration, computed once per index version from the index's own cases (leave-one-out).

One artefact, ``<version>/retrieval_calibration.json``, holds both uses:

- ``domains``: for every domain and channel, the distribution (QUANTILES) of the best score a sampled case reaches
  against the *other* cases of its domain (for text channels the case's first sentence stands in for a question).
  :class:`Calibrator` turns a raw score into its quantile position in [0, 1] (0.5: as similar as a typical in-domain
  nearest neighbour), which makes channels and domains comparable: cross-domain merging, calibrated score fusion and
  the gap selector use it.
- ``floors``: per channel (image→image, question→report, pooled over domains), a low percentile (PERCENTILE) of the
  same kind of leave-one-out best scores (same image content excluded as well): the evidence floor. A query whose
  best evidence scores below what nearly every in-corpus case reaches is far from everything indexed, and the answer
  says the evidence is insufficient.

The two were computed by two modules before (each with its own first-sentence rule); they are merged here with each
one's sampling and first-sentence rule kept (``first_sentence(text, vqa=...)``), so the figures are unchanged.
An index built before the merge keeps its floors in ``manifest.json`` (``calibration``); :meth:`Calibrator.floors`
reads them from there.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

FILE = "retrieval_calibration.json"
QUANTILES = np.linspace(0.0, 1.0, 21)
SAMPLE = 200  # cases per domain and channel for the quantiles
FLOOR_SAMPLE = 300  # cases (all domains) for the floors
PERCENTILE = 5.0


def first_sentence(text: str, *, vqa: bool = True) -> str:
    """A report's first sentence, the stand-in for a question about it. ``vqa``: a VQA corpus's indexed text
    (``Q: … A: …``) gives its first question itself (the channel calibration's rule; the floors use ``vqa=False``)."""
    if not vqa:
        parts = [p.strip() for p in re.split(r"(?<=[.?!])\s+", text) if len(p.strip()) > 3]
        return parts[0] if parts else text[:200]
    parts = re.split(r"(?<=[.?!])\s+|(?=\bQ:\s)", text)
    parts = [p.strip() for p in parts if len(p.strip()) > 3]
    s = parts[0] if parts else text[:200]
    m = re.match(r"Q:\s*(.+?)\s*A:", s)
    return m.group(1) if m else s


def calibrate(store, *, text_encoder=None, image_encoder_space: str | None = None, bm25=None, seed: int = 0
              ) -> dict:
    """The whole artefact: ``{"quantiles", "domains", "floors"}`` for an opened :class:`IndexStore`."""
    out = calibrate_channels(store, text_encoder=text_encoder, image_encoder_space=image_encoder_space, bm25=bm25,
                             seed=seed)
    out["floors"] = evidence_floors(store, text_encoder, seed=seed)
    return out


def evidence_floors(store, text_encoder, *, n: int = FLOOR_SAMPLE, seed: int = 0) -> dict:
    """Per channel, the PERCENTILE-th percentile of leave-one-out best scores over up to ``n`` sampled cases."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict] = {}
    img_scores = []
    for domain, kinds in store.manifest["domains"].items():
        if "image" not in kinds:
            continue
        ids, vecs = store.vectors(domain, "image")
        if len(ids) < 3:
            continue
        index = store.faiss_index(domain, "image")
        meta = {r["vec_id"]: (r["case_id"], r["content_hash"]) for r in store.image_rows(domain)}
        pick = rng.choice(len(ids), size=min(n, len(ids)), replace=False)
        D, I = index.search(np.ascontiguousarray(vecs[pick]), min(10, len(ids)))
        for row, qi in enumerate(pick):
            case, h = meta[int(ids[qi])]
            for s, j in zip(D[row], I[row]):
                if j >= 0 and int(j) in meta and meta[int(j)][0] != case and meta[int(j)][1] != h:
                    img_scores.append(float(s))
                    break
    if img_scores:
        out["image-image"] = _summary(img_scores)
    txt_scores = []
    rows = store.texts()
    if len(rows) >= 3 and text_encoder is not None:
        pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
        qv = text_encoder.encode_texts([first_sentence(rows[i][1], vqa=False) for i in pick])
        for domain, kinds in store.manifest["domains"].items():
            if "text" not in kinds:
                continue
            index = store.faiss_index(domain, "text")
            D, I = index.search(qv, min(10, index.ntotal))
            vec_to_case = store.text_vector_cases(domain)
            for row, i in enumerate(pick):
                if rows[i][2] != domain:
                    continue
                own = rows[i][0]
                for s, j in zip(D[row], I[row]):
                    if j >= 0 and vec_to_case.get(int(j)) != own:
                        txt_scores.append(float(s))
                        break
    if txt_scores:
        out["question-report"] = _summary(txt_scores)
    return out


def _summary(scores: list[float]) -> dict:
    a = np.asarray(scores)
    return {"floor": float(np.percentile(a, PERCENTILE)), "percentile": PERCENTILE, "median": float(np.median(a)),
            "n": int(a.size)}


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
            queries = [first_sentence(rows[i][1]) for i in pick]
            own = [rows[i][0] for i in pick]
            if text_encoder is not None and "text" in store.encoders:
                hits = store.search("text", text_encoder.encode_texts(queries), 5, domains=[dom])
                res["question-report"] = _best_other(hits, own)
            if bm25 is not None:
                hits = [bm25.search(qt, 5, domains=[dom]) for qt in queries]
                res["bm25"] = _best_other(hits, own)
        out[dom] = {ch: v for ch, v in res.items() if v is not None}
    return {"quantiles": QUANTILES.round(3).tolist(), "domains": out}


def _best_other(hits: list[list], own: list[str | None]) -> dict | None:
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
        p = Path(version_dir) / FILE
        tmp = p.with_name(".retrieval_calibration.tmp.json")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, p)

    @classmethod
    def load(cls, version_dir: str | Path) -> "Calibrator | None":
        p = Path(version_dir) / FILE
        return cls(json.loads(p.read_text())) if p.exists() else None
