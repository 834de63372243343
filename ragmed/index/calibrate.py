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
        count = _count(store, domain, "image")
        if count < 3:
            continue
        index = store.faiss_index(domain, "image")
        pick = rng.choice(count, size=min(n, count), replace=False)
        q_ids, q_vecs = _vectors_at(store, domain, "image", pick)
        D, I = index.search(np.ascontiguousarray(q_vecs), min(10, count))
        meta = _image_meta(store, set(q_ids.tolist()) | {int(j) for j in I.ravel() if j >= 0})
        for row, qid in enumerate(q_ids):
            case, h = meta[int(qid)]
            for s, j in zip(D[row], I[row]):
                if j >= 0 and int(j) in meta and meta[int(j)][0] != case and meta[int(j)][1] != h:
                    img_scores.append(float(s))
                    break
    if img_scores:
        out["image-image"] = _summary(img_scores)
    txt_scores = []
    n_rows = _count_texts(store, None)
    if n_rows >= 3 and text_encoder is not None:
        pick = rng.choice(n_rows, size=min(n, n_rows), replace=False)
        rows = _texts_at(store, None, pick)
        qv = text_encoder.encode_texts([first_sentence(r[1], vqa=False) for r in rows])
        for domain, kinds in store.manifest["domains"].items():
            if "text" not in kinds:
                continue
            index = store.faiss_index(domain, "text")
            D, I = index.search(qv, min(10, index.ntotal))
            vec_to_case = store.text_vector_cases(domain)
            for row, r in enumerate(rows):
                if r[2] != domain:
                    continue
                own = r[0]
                for s, j in zip(D[row], I[row]):
                    if j >= 0 and vec_to_case.get(int(j)) != own:
                        txt_scores.append(float(s))
                        break
    if txt_scores:
        out["question-report"] = _summary(txt_scores)
    return out


# --- streamed reads: only the sampled vectors and rows are held, never a whole domain ----------------------------
def _count(store, domain: str, kind: str) -> int:
    rec = store.manifest.get("domains", {}).get(domain, {}).get(kind)
    if rec and "n" in rec:
        return int(rec["n"])
    return len(store.vectors(domain, kind)[0])


def _vectors_at(store, domain: str, kind: str, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (ids, vectors) at ``positions`` (in that order) of ``store.vectors(domain, kind)``, read part by part."""
    from ragmed.index.parts import list_parts

    root = getattr(store, "version_dir", None)
    parts = list_parts(Path(root) / "vectors", domain, kind) if root is not None else []
    if not parts:
        ids, vecs = store.vectors(domain, kind)
        return ids[positions], vecs[positions]
    positions = np.asarray(positions)
    order = np.argsort(positions, kind="stable")
    out_ids = np.zeros(len(positions), dtype=np.int64)
    out_vecs: np.ndarray | None = None
    start, k = 0, 0
    for p in parts:
        with np.load(p) as z:
            ids, vecs = z["ids"], z["vectors"]
        end = start + len(ids)
        while k < len(order) and positions[order[k]] < end:
            dst, src = order[k], positions[order[k]] - start
            if out_vecs is None:
                out_vecs = np.zeros((len(positions), vecs.shape[1]), dtype=np.float32)
            out_ids[dst], out_vecs[dst] = ids[src], vecs[src]
            k += 1
        start = end
    return out_ids, out_vecs if out_vecs is not None else np.zeros((0, 0), dtype=np.float32)


def _image_meta(store, vec_ids: set[int]) -> dict[int, tuple[str, str]]:
    """vec id → (case id, content hash) for the given image vectors only."""
    out: dict[int, tuple[str, str]] = {}
    ids = sorted(vec_ids)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        q = f"SELECT vec_id, case_id, content_hash FROM images WHERE vec_id IN ({','.join('?' * len(chunk))})"
        out.update({int(r[0]): (r[1], r[2]) for r in store.db.execute(q, chunk)})
    return out


def _texts_query(domain: str | None, what: str) -> tuple[str, tuple]:
    if domain is None:  # as IndexStore.texts: cases with text, in index order
        return f"SELECT {what} FROM cases WHERE text != ''" + (" ORDER BY rowid" if what != "COUNT(*)" else ""), ()
    return (f"SELECT {what} FROM cases WHERE domain=? AND text != ''" + (" ORDER BY rowid" if what != "COUNT(*)"
                                                                          else ""), (domain,))


def _count_texts(store, domain: str | None) -> int:
    return int(store.db.execute(*_texts_query(domain, "COUNT(*)")).fetchone()[0])


def _texts_at(store, domain: str | None, positions) -> list[tuple[str, str, str]]:
    """``store.texts(domain)[i]`` for each i in ``positions`` (in that order), streamed from the metadata."""
    want = {int(p): k for k, p in enumerate(positions)}
    out: list = [None] * len(want)
    for i, r in enumerate(store.db.execute(*_texts_query(domain, "case_id, text, domain"))):
        k = want.get(i)
        if k is not None:
            out[k] = (r[0], r[1], r[2])
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
        n_img = _count(store, dom, "image") if "image" in store.manifest["domains"].get(dom, {}) else 0
        if n_img >= 3:
            pick = rng.choice(n_img, size=min(n, n_img), replace=False)
            q_ids, q = _vectors_at(store, dom, "image", pick)
            meta = _image_meta(store, set(q_ids.tolist()))
            own = [meta.get(int(i), (None,))[0] for i in q_ids]
            q = np.ascontiguousarray(q)
            hits = store.search("image", q, 5, domains=[dom])
            res["image-image"] = _best_other(hits, own)
            text_space = store.encoders.get("text", {}).get("space")
            if image_encoder_space is not None and image_encoder_space == text_space:
                hits = store.search("text", q, 5, domains=[dom])
                res["image-report"] = _best_other(hits, own)
        n_rows = _count_texts(store, dom)
        if n_rows >= 3:
            pick = rng.choice(n_rows, size=min(n, n_rows), replace=False)
            rows = _texts_at(store, dom, pick)
            queries = [first_sentence(r[1]) for r in rows]
            own = [r[0] for r in rows]
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
