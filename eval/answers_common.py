"""Shared helpers of eval/train_answerer.py and eval/eval_answers.py: the committed VQA-RAD split by image
(eval/splits/vqa_rad_vlm_seed0.json), its dev slice, and the retrieval of evidence votes per question (cached).

Retrieval uses the index of the split's training images only, built with the tower trained without the evaluation
images (eval/eval_vlm.py's build_index); a question's own image is excluded from its evidence (exclude_hashes).
"""
from __future__ import annotations

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
