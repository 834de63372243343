"""Shared helpers of eval/train_answerer.py and eval/eval_answers.py: the committed VQA-RAD split by image
(eval/splits/vqa_rad_vlm_seed0.json), its dev slice, and the retrieval of evidence votes per question (cached).

Retrieval uses the index of the split's training images only, built with the tower trained without the evaluation
images (eval/eval_vlm.py's build_index); a question's own image is excluded from its evidence (exclude_hashes).
"""
from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_vlm as T  # noqa: E402

REPO, DATA, SPLIT = T.REPO, T.DATA, T.SPLIT


def split_rows(split: Path = SPLIT):
    """(train rows, dev rows, eval rows) of VQA-RAD, with non-empty normalised answers. Dev = the recipe's 10 %
    of the training images (train_vlm.dev_images, seed 0); train excludes them."""
    from ragmed.eval.normalize import normalize_answer

    train_images, eval_images = T.load_split(Path(split))
    dev = T.dev_images(train_images)
    ok = lambda r: bool(normalize_answer(r["answer"]))  # noqa: E731
    tr = [r for r in T.vqa_rows(set(train_images) - dev) if ok(r)]
    dv = [r for r in T.vqa_rows(dev) if ok(r)]
    ev = [r for r in T.vqa_rows(set(eval_images)) if ok(r)]
    return tr, dv, ev


ORGANS = ["HEAD", "CHEST", "ABD"]
MODALITIES = ["xray", "ct", "mri"]
_MOD_RE = {"xray": r"x[- ]?ray|radiograph|\bfilm\b|\bcxr\b", "ct": r"\bct\b|computed tomography",
           "mri": r"\bmri?\b|flair|\bt1\b|\bt2\b|\bdwi\b|\badc\b|diffusion"}


def image_labels(rows: list[dict]) -> dict[str, tuple[int, int]]:
    """Image-level auxiliary targets derived from the given (training-part) rows only, per image name:
    (organ index in ORGANS from VQA-RAD's ``image_organ`` field, modality index in MODALITIES or -1 when unknown).
    Modality votes: "Is this a CT?"-style closed questions (+2 yes / −2 no), open answers naming a modality (+2), other
    questions of the same image naming one ("... on this CT", +1); the top vote when positive."""
    from ragmed.eval.normalize import normalize_answer

    raw = {r["qid"]: r for r in json.loads((DATA / "vqa-rad" / "train.json").read_text())}
    votes: dict[str, dict[str, int]] = {}
    organ: dict[str, int] = {}
    for r in rows:
        n = r["image"][1]
        organ[n] = ORGANS.index(str(raw[r["qid"]]["image_organ"]).strip().upper())
        q, a = r["question"].lower(), normalize_answer(r["answer"])
        v = votes.setdefault(n, dict.fromkeys(MODALITIES, 0))
        for m in MODALITIES:
            hit = re.search(_MOD_RE[m], q)
            if r["closed"] and hit and len(q) < 50 and re.match(r"^(is|was) (this|the image|this image) (a |an )?", q):
                v[m] += 2 if a == "yes" else (-2 if a == "no" else 0)
            elif not r["closed"] and re.search(_MOD_RE[m], a):
                v[m] += 2
            elif hit and (not r["closed"] or not q.startswith(("is this a", "is this an", "was this"))):
                v[m] += 1
    out = {}
    for n, v in votes.items():
        m = max(v, key=v.get)
        out[n] = (organ[n], MODALITIES.index(m) if v[m] > 0 else -1)
    return out


IMAGE_LEVEL = ("ORGAN", "MODALITY", "PLANE")  # VQA-RAD question types about the whole image
QTYPES = (*IMAGE_LEVEL, "OTHER")


def question_type(row: dict, raw: dict | None = None) -> str:
    """VQA-RAD's ``question_type`` of a row (its first type), with every type that is not image-level as OTHER."""
    raw = raw if raw is not None else raw_rows()
    t = str(raw[row["qid"]]["question_type"]).split(",")[0].strip().upper()
    return t if t in IMAGE_LEVEL else "OTHER"


@functools.lru_cache(maxsize=1)
def raw_rows() -> dict:
    """VQA-RAD's rows by qid (read once)."""
    return {r["qid"]: r for r in json.loads((DATA / "vqa-rad" / "train.json").read_text())}


def plane_labels(rows: list[dict]) -> dict[str, int]:
    """Per image name, the index in PLANES of its plane as stated by the given (training-part) rows: an open PLANE
    question's answer, or "Is this an axial / coronal / … image?" answered yes; images without one are absent."""
    from ragmed.eval.normalize import normalize_answer

    raw = raw_rows()
    out: dict[str, int] = {}
    for r in rows:
        if question_type(r, raw) != "PLANE":
            continue
        a, q = normalize_answer(r["answer"]), r["question"].lower()
        hit = None
        if not r["closed"]:
            hit = next((p for p, syn in PLANE_SYNONYMS.items() if a in syn), None)
        elif a == "yes":
            hit = next((p for p, syn in PLANE_SYNONYMS.items() if any(re.search(rf"\b{s}\b", q) for s in syn)), None)
        if hit is not None:
            out[r["image"][1]] = PLANES.index(hit)
    return out


PLANES = ["axial", "coronal", "sagittal", "pa", "ap", "lateral"]
PLANE_SYNONYMS = {"axial": ("axial", "transverse"), "coronal": ("coronal",), "sagittal": ("sagittal",),
                  "pa": ("pa", "posteroanterior", "posterior anterior"), "ap": ("ap", "anteroposterior"),
                  "lateral": ("lateral",)}


def fit_image_level(rows: list[dict], qvec: dict, emb: dict, vocab: list[str], *, plane: bool = False,
                    criterion: str = "f1", types: tuple[str, ...] = IMAGE_LEVEL, c_type: float = 10.0,
                    c_head: float = 1.0) -> dict:
    """The image-level answerer of open "what organ / which modality / which plane is this?" questions, fitted on
    training-part ``rows`` only (JSON-serialisable; applied by ragmed.generate.answerer.model.ImageLevel):

    - a question-type classifier: multinomial logistic regression on the MiniLM question vectors (``qvec``, by
      question text) with VQA-RAD's ``question_type`` (ORGAN / MODALITY / PLANE / OTHER) as labels;
    - image heads: logistic regressions on the frozen tower embeddings (``emb``, by image name) for organ
      (VQA-RAD's ``image_organ``), modality (:func:`image_labels`, images with a known modality only) and, with
      ``plane``, plane (:func:`plane_labels`); without ``plane``, PLANE questions are answered from the organ head;
    - per (type, label) the answer of ``vocab`` with the highest mean token F1 (``criterion="recall"``: token recall,
      the evaluation's open metric) against the training part's open answers of that type on images with that label
      (``ragmed.eval.vqa.token_scores``): the label put in the vocabulary's words ("HEAD" → "brain", "CHEST" + PLANE
      → "pa"). Both tables are kept; ``criterion`` names the one used. ``types``: the question types answered so.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from ragmed.eval.normalize import normalize_answer
    from ragmed.eval.vqa import token_scores

    raw = raw_rows()
    lab = image_labels(rows)
    heads_y = {"organ": {n: v[0] for n, v in lab.items()},
               "modality": {n: v[1] for n, v in lab.items() if v[1] >= 0}}
    label_names = {"organ": list(ORGANS), "modality": list(MODALITIES)}
    if plane:
        heads_y["plane"] = plane_labels(rows)
        label_names["plane"] = list(PLANES)
    head_of = {"ORGAN": "organ", "MODALITY": "modality", "PLANE": "plane" if plane else "organ"}
    qs = sorted({r["question"] for r in rows})
    qtype = {}
    for r in rows:
        qtype[r["question"]] = question_type(r, raw)
    X = np.stack([qvec[q] for q in qs]).astype(np.float64)
    clf = LogisticRegression(C=c_type, max_iter=2000).fit(X, [qtype[q] for q in qs])
    out = {"qtype": {"classes": list(clf.classes_), "coef": clf.coef_.tolist(), "intercept": clf.intercept_.tolist()},
           "heads": {}, "head_of_type": {t: h for t, h in head_of.items() if t in types},
           "candidates": [a for a in vocab if a not in ("yes", "no")], "criterion": criterion,
           "tables": {"f1": {}, "recall": {}}}
    for h, ys in heads_y.items():
        names = sorted(ys)
        present = sorted({ys[n] for n in names})
        m = LogisticRegression(C=c_head, max_iter=2000).fit(np.stack([emb[n] for n in names]).astype(np.float64),
                                                          [ys[n] for n in names])
        coef = np.zeros((len(label_names[h]), m.coef_.shape[1]))
        icpt = np.full(len(label_names[h]), -1e4)  # labels never seen in training: never predicted
        if len(present) == 2:  # binary: sklearn keeps one row (the second class vs the first)
            coef[present[1]], icpt[present[1]], icpt[present[0]] = m.coef_[0], m.intercept_[0], 0.0
        else:
            for j, c in enumerate(m.classes_):
                coef[c], icpt[c] = m.coef_[j], m.intercept_[j]
        out["heads"][h] = {"labels": label_names[h], "coef": coef.tolist(), "intercept": icpt.tolist(),
                           "n_images": len(names)}
    cand = out["candidates"]
    for t, h in head_of.items():
        ys = heads_y[h]
        tables = {"f1": [], "recall": []}
        for li in range(len(label_names[h])):
            golds = [normalize_answer(r["answer"]) for r in rows if not r["closed"] and qtype[r["question"]] == t
                     and ys.get(r["image"][1]) == li]
            sc = [[token_scores(a, g) for g in golds] for a in cand]
            for m in tables:
                tables[m].append([float(np.mean([x[m] for x in row])) if golds else 0.0 for row in sc])
        for m in tables:
            out["tables"][m][t] = tables[m]
    return out


def retrieve_evidence_votes(idx: Path, pipe: Path, rows: list[dict], cache: Path, log_every: int = 50) -> dict:
    """Per question (qid): the vote's answer, winner, weighted share and every case's vote (ref, answer, weight)
    over the selected evidence (own image excluded); cached in ``cache`` and resumed (:func:`eval_vlm.retrieve_votes`,
    the one retrieval loop of these recipes)."""
    import eval_vlm as E

    return E.retrieve_votes(idx, pipe, rows, cache, log_every=log_every)


if __name__ == "__main__":  # python eval/answers_common.py TOWER WORK: fill the retrieval cache (dev + eval rows)
    import eval_vlm as E

    tower, work = Path(sys.argv[1]), Path(sys.argv[2])
    tr, dv, ev = split_rows()
    train_images, _ = T.load_split()
    idx, pipe = E.build_index(tower, train_images, work)
    rows = sorted(ev, key=lambda r: (not r["closed"], r["image"][1])) + dv
    retrieve_evidence_votes(idx, pipe, rows, work / "votes_v2.json")
