"""Evaluate the answerers of ragmed side by side on the evaluation images of the committed VQA-RAD split by image
(eval/splits/vqa_rad_vlm_seed0.json), with components that never saw them.

    python eval/eval_answers.py --answerer RUN/best --question-only QRUN/best --work WORK [--out eval/results/eval_answers.json]

- ragmed-answerer (image + question classifier, eval/train_answerer.py) with the real image, a Gaussian-noise image
  (luma ~ N(128, 64²) in the image area, eval/train_vlm.py's noise_like) and a blank frame;
- question-only answerers: the same head trained without the image (``--question-only``), and the majority answer of
  the same question text in the training part (eval/eval_vlm.py);
- always "yes"; the vote over the retrieved cases (the default pipeline's closed answerer before this change), from the
  cache written by eval/answers_common.py (index of the training images only, built with the tower trained without the
  evaluation images; own image excluded);
- combinations: ``vote_or_answerer`` (the vote when its weighted share ≥ 0.75, else the answerer), and ragmed-vlm's
  predictions on its 160 + 40 sampled questions (eval/results/eval_vlm.predictions.json), on the same questions;
- open recall (gold tokens in the answer): the answerer's top answer; the answerer when confident
  (p ≥ min_open_confidence, calibrated on the training part's dev slice) else the open vote;
- risk–coverage of the answerer's closed answers ordered by its confidence (accuracy at 100 / 80 / 50 % coverage), and
  the closed-confidence threshold calibrated on the dev slice;
- departures: the share of closed answers that go against the majority of the retrieved cases that vote (they are
  answered, flagged ``departs-from-evidence`` and cite no disagreeing case).
- closed accuracy by VQA-RAD question type (real / noise image, question-only), and for an answerer with image-level
  heads (``--aux``) their accuracy on the evaluation images (labels from those images' own questions: a diagnostic).
95 % bootstrap intervals resample evaluation images (1,000 resamples), also for paired differences.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import answers_common as A  # noqa: E402
import eval_vlm as E  # noqa: E402
import train_answerer as TA  # noqa: E402
import train_vlm as T  # noqa: E402


def run_model(ans, rows, qv, ims, mode: str, seed: int = 0):
    """(predictions, confidences, open top answers, open confidences) for rows; mode real / noise / blank."""
    from ragmed.generate.answerer.model import choose
    from ragmed.generate.chat import closed_choices

    rng = np.random.default_rng(seed)
    q = np.stack([qv[r["question"]] for r in rows])
    arr = None
    if ans.image_branch:
        arr = np.stack([ims[r["image"][1]] for r in rows])
        if mode == "noise":
            arr = T.noise_like(arr, rng)
        elif mode == "blank":
            arr = np.zeros_like(arr)
            arr[..., 1:] = 128
    probs = np.concatenate([ans.probabilities(q[i:i + 128], None if arr is None else arr[i:i + 128])
                            for i in range(0, len(rows), 128)])
    preds, confs = [], []
    for r, p in zip(rows, probs):
        if r["closed"]:
            a, c = choose(p, ans.index, closed_choices(r["question"]))
            a, c = (a or "yes"), c
        else:
            j = int(np.argmax(p))
            a, c = ans.vocab[j], float(p[j])
        preds.append(a)
        confs.append(c)
    return preds, confs


def coverage_curve(correct: list[float], conf: list[float], levels=(1.0, 0.8, 0.5)) -> dict:
    order = np.argsort(-np.asarray(conf), kind="stable")
    c = np.asarray(correct)[order]
    out = {}
    for lv in levels:
        k = max(1, int(round(lv * len(c))))
        out[f"{int(lv * 100)}%"] = {"accuracy": round(float(c[:k].mean()), 4),
                                    "threshold": round(float(np.asarray(conf)[order][k - 1]), 4)}
    return out


def calibrate_closed(correct, conf, target: float = 0.8, min_coverage: float = 0.5) -> float:
    """The lowest confidence threshold whose answered dev questions reach ``target`` accuracy with at least
    ``min_coverage`` coverage; 0 (never abstain) when none does."""
    conf, correct = np.asarray(conf), np.asarray(correct)
    for t in sorted(set(np.round(conf, 3).tolist())):
        m = conf >= t
        if m.mean() < min_coverage:
            break
        if correct[m].mean() >= target:
            return float(t)
    return 0.0


def calibrate_open(correct, conf, target: float = 0.5) -> float:
    """The lowest threshold at which the answerer's confident open answers are right at least ``target`` of the
    time on dev (else 1.0: never answer open questions from the classifier)."""
    conf, correct = np.asarray(conf), np.asarray(correct)
    for t in sorted(set(np.round(conf, 3).tolist())):
        m = conf >= t
        if m.sum() >= 5 and correct[m].mean() >= target:
            return float(t)
    return 1.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--answerer", required=True)
    ap.add_argument("--question-only", required=True)
    ap.add_argument("--work", required=True, help="holds votes_v2.json (eval/answers_common.py)")
    ap.add_argument("--vlm-predictions", default=str(A.REPO / "eval" / "results" / "eval_vlm.predictions.json"))
    ap.add_argument("--vote-share", type=float, default=0.75)
    ap.add_argument("--out", default=str(A.REPO / "eval" / "results" / "eval_answers.json"))
    ap.add_argument("--write-calibration", action="store_true",
                    help="store the dev-calibrated thresholds in the answerer's config.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    import torch

    from ragmed.eval.normalize import normalize_answer
    from ragmed.eval.vqa import closed_correct, token_scores
    from ragmed.generate.answerer.model import Answerer

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    train_rows, dev_rows, eval_rows = A.split_rows()
    qv, ims = TA.features(train_rows + dev_rows, Path(a.work) / "features_train.npz")
    qv2, ims2 = TA.features(eval_rows, Path(a.work) / "features_eval.npz")
    qv.update(qv2)
    ims.update(ims2)
    full, qonly = Answerer(a.answerer), Answerer(a.question_only)

    # calibration on the dev slice of the training part
    dpred, dconf = run_model(full, dev_rows, qv, ims, "real")
    dcl = [i for i, r in enumerate(dev_rows) if r["closed"]]
    dop = [i for i, r in enumerate(dev_rows) if not r["closed"]]
    d_ok_c = [float(closed_correct(dpred[i], dev_rows[i]["answer"])) for i in dcl]
    d_ok_o = [float(normalize_answer(dpred[i]) == normalize_answer(dev_rows[i]["answer"])) for i in dop]
    min_closed = calibrate_closed(d_ok_c, [dconf[i] for i in dcl])
    min_open = calibrate_open(d_ok_o, [dconf[i] for i in dop])
    calib = {"min_closed_confidence": min_closed, "min_open_confidence": min_open,
             "dev_closed_accuracy": round(float(np.mean(d_ok_c)), 4), "dev_open_exact": round(float(np.mean(d_ok_o)), 4),
             "dev_risk_coverage": coverage_curve(d_ok_c, [dconf[i] for i in dcl]),
             "rule": "closed: lowest threshold with dev accuracy >= 0.80 at coverage >= 0.5, else 0; open: lowest "
                     "threshold whose confident dev answers (>= 5) are exactly right >= 50 % of the time, else 1",
             "calibrated_on": f"the dev slice of the training part ({len(dev_rows)} questions)"}
    if a.write_calibration:
        cfgp = Path(a.answerer) / "config.json"
        cfg = json.loads(cfgp.read_text())
        cfg["calibration"] = calib
        cfgp.write_text(json.dumps(cfg, indent=1))

    closed = [r for r in eval_rows if r["closed"]]
    opened = [r for r in eval_rows if not r["closed"]]
    votes = json.loads((Path(a.work) / "votes_v2.json").read_text())
    preds, confs = {}, {}
    for mode in ("real", "noise", "blank"):
        preds[f"answerer_{mode}"], confs[mode] = run_model(full, closed, qv, ims, mode, a.seed)
    preds["question_only_learned"], _ = run_model(qonly, closed, qv, ims, "real")
    qo = E.question_only(train_rows + dev_rows)
    preds["question_only_majority"] = [qo(r) for r in closed]
    preds["always_yes"] = ["yes"] * len(closed)
    scores = {k: [float(closed_correct(p, r["answer"])) for p, r in zip(v, closed)] for k, v in preds.items()}
    pairs = [("answerer_real", "answerer_noise"), ("answerer_real", "answerer_blank"),
             ("answerer_real", "question_only_learned"), ("answerer_real", "question_only_majority"),
             ("answerer_real", "always_yes")]
    have = [i for i, r in enumerate(closed) if str(r["qid"]) in votes]
    sub = [closed[i] for i in have]
    res_closed = E.summarise(closed, scores, pairs)
    res_vote = None
    if have:
        vp = {"vote": [votes[str(r["qid"])]["vote"] for r in sub]}
        for mode in ("real", "noise"):
            vp[f"vote_or_answerer_{mode}"] = [
                votes[str(r["qid"])]["vote"] if votes[str(r["qid"])]["winner"] is not None
                and votes[str(r["qid"])]["share"] >= a.vote_share else preds[f"answerer_{mode}"][i]
                for i, r in zip(have, sub)]
        for k in ("answerer_real", "answerer_noise", "question_only_learned"):
            vp[k] = [preds[k][i] for i in have]
        vs = {k: [float(closed_correct(p, r["answer"])) for p, r in zip(v, sub)] for k, v in vp.items()}
        res_vote = E.summarise(sub, vs, [("answerer_real", "vote"), ("vote_or_answerer_real", "vote"),
                                         ("vote_or_answerer_real", "answerer_real"),
                                         ("vote_or_answerer_real", "vote_or_answerer_noise"),
                                         ("vote_or_answerer_real", "question_only_learned")])
        dep = []
        for i, r in zip(have, sub):
            w = defaultdict(float)
            for _, ans_, wt in votes[str(r["qid"])]["votes"]:
                w[ans_] += wt
            if w:
                maj = max(w, key=w.get)
                dep.append(float(normalize_answer(preds["answerer_real"][i]) != maj and len(w) >= 1))
        res_vote["departs_from_evidence_majority"] = {"mean": round(float(np.mean(dep)), 4) if dep else None,
                                                      "n": len(dep)}
        res_vote["n_questions"] = len(sub)
    res_vlm = None
    vlm_file = Path(a.vlm_predictions)
    if vlm_file.exists():
        vl = {str(p["qid"]): p for p in json.loads(vlm_file.read_text()) if "vlm_real" in p}
        hv = [i for i, r in enumerate(closed) if str(r["qid"]) in vl]
        if hv:
            s2 = [closed[i] for i in hv]
            vp = {f"ragmed_vlm_{m}": [vl[str(r["qid"])][f"vlm_{m}"] for r in s2] for m in ("real", "noise")}
            for k in ("answerer_real", "answerer_noise", "question_only_learned"):
                vp[k] = [preds[k][i] for i in hv]
            vs = {k: [float(closed_correct(p, r["answer"])) for p, r in zip(v, s2)] for k, v in vp.items()}
            res_vlm = E.summarise(s2, vs, [("answerer_real", "ragmed_vlm_real"),
                                           ("ragmed_vlm_real", "ragmed_vlm_noise")])
            res_vlm["n_questions"] = len(s2)
    rc = coverage_curve(scores["answerer_real"], confs["real"])
    kept = [c >= min_closed for c in confs["real"]]
    rc["at_calibrated_threshold"] = {
        "threshold": min_closed, "coverage": round(float(np.mean(kept)), 4),
        "accuracy": round(float(np.mean([s for s, k in zip(scores["answerer_real"], kept) if k])), 4) if any(kept)
        else None}

    # open questions
    op, oc = run_model(full, opened, qv, ims, "real")
    opn, _ = run_model(full, opened, qv, ims, "noise", a.seed)
    oq, _ = run_model(qonly, opened, qv, ims, "real")
    open_preds = {"answerer_top": op, "answerer_top_noise": opn, "question_only_learned": oq,
                  "question_only_majority": [qo(r) for r in opened]}
    res_image_level = None
    if full.image_level is not None:  # open questions about the whole image answered from the image-level heads
        rng = np.random.default_rng(a.seed)
        oqv = np.stack([qv[r["question"]] for r in opened])
        oarr = np.stack([ims[r["image"][1]] for r in opened])
        for tag, arr in (("", oarr), ("_noise", T.noise_like(oarr, rng))):
            hits = full.image_level.answers(oqv, full.embeddings(arr))
            base = open_preds["answerer_top" + tag]
            open_preds["answerer_top_image_level" + tag] = [h[0] if h else b for h, b in zip(hits, base)]
        fired = [h is not None for h in full.image_level.answers(oqv, full.embeddings(oarr))]
        truth = [A.question_type(r) for r in opened]
        types, _ = full.image_level.question_types(oqv)
        res_image_level = {"fired": int(sum(fired)), "n_open": len(opened),
                           "question_type_accuracy": round(float(np.mean([x == y for x, y in zip(types, truth)])), 4),
                           "image_level_questions_by_vqa_rad_type": int(sum(t != "OTHER" for t in truth))}
    ohave = [i for i, r in enumerate(opened) if str(r["qid"]) in votes]
    osub = [opened[i] for i in ohave]
    oscores = {k: [token_scores(p, r["answer"])["recall"] for p, r in zip(v, opened)] for k, v in open_preds.items()}
    res_open = E.summarise(opened, oscores, [("answerer_top", "answerer_top_noise"),
                                             ("answerer_top", "question_only_learned")] + (
        [("answerer_top_image_level", "answerer_top"), ("answerer_top_image_level", "answerer_top_image_level_noise"),
         ("answerer_top_image_level", "question_only_learned")] if res_image_level else []))
    if res_image_level:
        fired_idx = [i for i in range(len(opened)) if open_preds["answerer_top_image_level"][i] != op[i]]
        res_image_level["where_answer_changed"] = len(fired_idx)
        res_open["image_level"] = res_image_level
    res_open["answered_by_answerer_at_threshold"] = round(float(np.mean([c >= min_open for c in oc])), 4)
    res_open_vote = None
    if ohave:
        vp = {"vote": [votes[str(r["qid"])]["vote"] for r in osub],
              "answerer_if_confident_else_vote": [op[i] if oc[i] >= min_open else votes[str(r["qid"])]["vote"]
                                                  for i, r in zip(ohave, osub)],
              "answerer_top": [op[i] for i in ohave]}
        vs = {k: [token_scores(p, r["answer"])["recall"] for p, r in zip(v, osub)] for k, v in vp.items()}
        res_open_vote = E.summarise(osub, vs, [("answerer_if_confident_else_vote", "vote")])
        res_open_vote["n_questions"] = len(osub)

    # closed accuracy by VQA-RAD question type (image-level = MODALITY, PLANE, ORGAN)
    raw = {r["qid"]: r for r in json.loads((A.DATA / "vqa-rad" / "train.json").read_text())}

    def qtype(r):
        t = str(raw[r["qid"]]["question_type"]).split(",")[0].strip().upper()
        return "IMAGE-LEVEL (MODALITY, PLANE, ORGAN)" if t in ("MODALITY", "PLANE", "ORGAN") else t

    by_type = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(closed):
        for k in ("answerer_real", "answerer_noise", "question_only_learned"):
            by_type[qtype(r)][k].append(scores[k][i])
    res_types = {t: {"n": len(d["answerer_real"]), **{k: round(float(np.mean(v)), 4) for k, v in d.items()}}
                 for t, d in sorted(by_type.items(), key=lambda x: -len(x[1]["answerer_real"]))}
    res_aux = None
    if full.config["arch"].get("aux"):  # the image-level heads, scored on the evaluation images (diagnostic)
        names = sorted({r["image"][1] for r in eval_rows})
        lab = A.image_labels(eval_rows)
        heads = full.image_heads(np.stack([ims[n] for n in names]))
        res_aux = {}
        for j, (title, labels) in enumerate(zip(("organ", "modality"), full.config["arch"]["aux_labels"])):
            y = np.array([lab[n][j] for n in names])
            pred = heads[j].argmax(1)
            res_aux[title] = {"accuracy": round(float((pred[y >= 0] == y[y >= 0]).mean()), 4),
                              "n_images": int((y >= 0).sum()), "labels": labels}

    result = {
        "schema": 1, "task": "answers-vqa",
        "command": "python eval/eval_answers.py " + " ".join(
            x if not x.startswith("/") else Path(x).name for x in (argv if argv is not None else sys.argv[1:])),
        "split": A.SPLIT.name, "n_eval_images": len({r["image"][1] for r in eval_rows}),
        "n_closed": len(closed), "n_open": len(opened),
        "answerer": {k: json.loads((Path(a.answerer) / "config.json").read_text()).get(k)
                     for k in ("name", "epoch", "dev", "trained_on", "command")},
        "question_only": {k: json.loads((Path(a.question_only) / "config.json").read_text()).get(k)
                          for k in ("epoch", "dev", "command")},
        "calibration": calib,
        "metrics": {"closed_accuracy": res_closed, "closed_with_retrieval": res_vote, "closed_vs_ragmed_vlm": res_vlm,
                    "closed_risk_coverage": rc,
                    "closed_by_question_type": res_types, "image_heads_on_eval_images": res_aux, "open_recall": res_open, "open_with_retrieval": res_open_vote},
        "notes": ["noise: Gaussian luma noise (mean 128, sd 64) in the image area of the letterboxed frame; "
                  "blank: an empty frame",
                  "vote: the vote alone over the retrieved cases (scored wrong where every case abstains)",
                  "closed_with_retrieval / open_with_retrieval: on the questions whose retrieval is cached",
                  "intervals: 95% bootstrap over evaluation images, 1000 resamples"],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(a.out)
    out.write_text(json.dumps(result, indent=1))
    out.with_name(out.stem + ".predictions.json").write_text(json.dumps(
        [{"qid": r["qid"], "question": r["question"], "gold": r["answer"], **{k: v[i] for k, v in preds.items()},
          "confidence": confs["real"][i]} for i, r in enumerate(closed)] +
        [{"qid": r["qid"], "question": r["question"], "gold": r["answer"], **{k: v[i] for k, v in open_preds.items()},
          "confidence": oc[i]} for i, r in enumerate(opened)]))
    for sect, d in result["metrics"].items():
        for k, v in (d or {}).items():
            if isinstance(v, dict) and "mean" in v:
                print(f"{sect:22s} {k:45s} {v['mean']} {v.get('ci95')}", file=sys.stderr)
    print(json.dumps(rc), json.dumps(calib), file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
