"""The evidence floor, calibrated on the index's own cases.

For up to ``n`` sampled cases the best score of their nearest *other* case is recorded per channel (leave-one-out,
same image content excluded): image→image for image vectors, and, for report text, the case's first sentence (a
stand-in for a question about it) against the other reports. The floor is a low percentile of those scores: a query
whose best evidence scores below what nearly every in-corpus case reaches is far from everything indexed, and the
answer says the evidence is insufficient.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

PERCENTILE = 5.0
SAMPLE = 300


def calibrate(version_dir: Path, manifest: dict, con, text_encoder, *, n: int = SAMPLE, seed: int = 0) -> dict:
    import faiss

    rng = np.random.default_rng(seed)
    out: dict[str, dict] = {}
    from ragmed.index.parts import load_parts

    vec_root = version_dir / "vectors"
    # image → image
    img_scores = []
    for domain, kinds in manifest["domains"].items():
        if "image" not in kinds:
            continue
        ids, vecs = load_parts(vec_root, domain, "image")
        if len(ids) < 3:
            continue
        index = faiss.read_index(str(version_dir / "domains" / domain / "image.faiss"))
        meta = {r[0]: (r[1], r[2]) for r in con.execute("SELECT vec_id, case_id, content_hash FROM images WHERE domain=?",
                                                       (domain,))}
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
    # question-like text → report
    txt_scores = []
    rows = con.execute("SELECT rowid, case_id, text, domain FROM cases WHERE text != ''").fetchall()
    if len(rows) >= 3:
        pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
        queries = [_first_sentence(rows[i][2]) for i in pick]
        qv = text_encoder.encode_texts(queries)
        for domain, kinds in manifest["domains"].items():
            if "text" not in kinds:
                continue
            index = faiss.read_index(str(version_dir / "domains" / domain / "text.faiss"))
            k = min(10, index.ntotal)
            D, I = index.search(qv, k)
            for row, i in enumerate(pick):
                if rows[i][3] != domain:
                    continue
                own = rows[i][0]
                for s, j in zip(D[row], I[row]):
                    if j >= 0 and int(j) != own:
                        txt_scores.append(float(s))
                        break
    if txt_scores:
        out["question-report"] = _summary(txt_scores)
    return out


def _first_sentence(text: str) -> str:
    parts = [p.strip() for p in re.split(r"(?<=[.?!])\s+", text) if len(p.strip()) > 3]
    return parts[0] if parts else text[:200]


def _summary(scores: list[float]) -> dict:
    a = np.asarray(scores)
    return {"floor": float(np.percentile(a, PERCENTILE)), "percentile": PERCENTILE, "median": float(np.median(a)),
            "n": int(a.size)}
