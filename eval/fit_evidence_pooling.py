"""Fit how much ragmed-answerer's closed yes/no answers lean on the image-matched evidence (issue 12, rare findings).

    python eval/fit_evidence_pooling.py --work WORK --index IDX --pipeline PIPE.yaml [--write]
    python eval/fit_evidence_pooling.py --image-domain [--write]

``--image-domain`` instead writes the answerer's image-domain reference (``ragmed/generate/answerer/
image_domain.safetensors``, :mod:`ragmed.generate.answerer.image_domain`): the tower embeddings of the answerer's own
training images (the training part of the split minus its dev slice) and, as threshold, their largest leave-one-out
nearest-neighbour distance. Set on the training images only; the dev slice, the evaluation half and PneumoniaMNIST
(train and validation images, never the test images the rare-finding benchmark asks about) are only reported:
how many of them lie beyond it (``eval/results/answerer_image_domain.json``).

The closed policy of ``ragmed/generate/answerer/backend.py`` pools two experts on the log-odds scale:

    logit P(yes) = logit P_classifier(yes) + beta * log((W_yes + alpha) / (W_no + alpha))

where W_yes / W_no are the vote weights of the retrieved cases that assert / deny the finding (the vote's rules:
image-matched cases only, negation scoped to the finding; ``ragmed.generate.vote.VoteGenerator.votes``). beta = 0 is
the classifier alone; beta = 1 with a calibrated classifier is naive Bayes. beta and alpha are chosen by dev
log-likelihood of the gold yes/no answers on the DEV SLICE of the training part of eval/splits/vqa_rad_vlm_seed0.json
(never the evaluation half, never the rare-finding set); the closed-confidence threshold is recalibrated on the same
dev slice with the answerer's own rule (lowest threshold with dev accuracy >= 0.80 at coverage >= 0.5). Then the
evaluation half reports closed accuracy with and without pooling (95 % bootstrap over images, paired).

WORK holds ``votes_v2.json`` (the evaluation rows' evidence votes, eval/answers_common.py) and receives
``votes_dev.json`` (the dev rows', retrieved here from IDX: the index of the training images built with the tower
trained without the evaluation images, own image excluded) and the feature caches.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import answers_common as A  # noqa: E402
import eval_answers as EA  # noqa: E402
import train_answerer as TA  # noqa: E402

OUT_PARAMS = A.REPO / "ragmed" / "generate" / "answerer" / "evidence_pooling.json"


def p_yes(ans, rows, qv, ims) -> np.ndarray:
    """The classifier's P(yes) renormalised over yes/no, per row (real image)."""
    q = np.stack([qv[r["question"]] for r in rows])
    arr = np.stack([ims[r["image"][1]] for r in rows]) if ans.image_branch else None
    probs = np.concatenate([ans.probabilities(q[i:i + 128], None if arr is None else arr[i:i + 128])
                            for i in range(0, len(rows), 128)])
    iy, inn = ans.index["yes"], ans.index["no"]
    return probs[:, iy] / np.maximum(probs[:, iy] + probs[:, inn], 1e-12)


def weights(rows, votes) -> tuple[np.ndarray, np.ndarray]:
    wy, wn = np.zeros(len(rows)), np.zeros(len(rows))
    for i, r in enumerate(rows):
        for _, a, w in votes.get(str(r["qid"]), {}).get("votes", []):
            if a == "yes":
                wy[i] += w
            elif a == "no":
                wn[i] += w
    return wy, wn


def pooled(py, wy, wn, beta, alpha):
    py = np.clip(py, 1e-6, 1 - 1e-6)
    z = np.log(py / (1 - py)) + beta * np.log((wy + alpha) / (wn + alpha))
    return 1 / (1 + np.exp(-z))


def _predict_alpha(predict, rows, votes, b):
    return predict(rows, votes, b, 0.5)


def fit_image_domain(answerer_dir: str, write: bool, out: Path) -> int:
    """Write the image-domain reference (see the module docstring) and report who lies beyond its threshold."""
    import torch

    from ragmed.generate.answerer import image_domain as D
    from ragmed.generate.answerer.model import Answerer
    from ragmed.io import load_image

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ans = Answerer(answerer_dir)
    tr, dev, ev = A.split_rows()

    def emb(rows):
        names = sorted({r["image"][1] for r in rows})
        return D.embed(ans, [load_image(A.DATA / "vqa-rad" / "images" / n).pixels for n in names])

    ref = emb(tr)
    path = D.DOMAIN_FILE if write else out.with_suffix(".safetensors")
    thr = D.save_domain(path, ref, D.tower_fingerprint(ans),
                        f"tower embeddings of the {len(ref)} training images of {A.SPLIT.name} minus its dev slice")
    dom = D.load_domain(ans, path)
    res = {"task": "answerer-image-domain", "command": "python eval/fit_evidence_pooling.py --image-domain"
           + (" --write" if write else ""), "n_reference": len(ref), "max_distance": round(thr, 4),
           "rule": "an image whose nearest reference image is further than max_distance (the largest leave-one-out "
                   "nearest-neighbour distance among the reference images) is outside the answerer's training domain",
           "beyond": {}}
    sets = {"vqa-rad dev slice": emb(dev), "vqa-rad evaluation half": emb(ev)}
    with np.load(A.DATA / "images" / "pneumoniamnist.npz") as z:
        for part in ("train", "val"):
            x = z[f"{part}_images"][:200]
            sets[f"pneumoniamnist {part} (first 200)"] = D.embed(ans, [a.astype(np.float32) / 255.0 for a in x])
    for name, e in sets.items():
        d = D.nearest_distance(e, dom.embeddings)
        res["beyond"][name] = {"n": len(d), "share_beyond": round(float((d > dom.max_distance).mean()), 4),
                               "median_distance": round(float(np.median(d)), 4)}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image-domain", action="store_true", help="write the answerer's image-domain reference instead")
    ap.add_argument("--work")
    ap.add_argument("--index")
    ap.add_argument("--pipeline")
    ap.add_argument("--answerer", default=str(A.REPO / "ragmed" / "generate" / "answerer" / "weights" / "ragmed-answerer"))
    ap.add_argument("--out", default=str(A.REPO / "eval" / "results" / "evidence_pooling.json"))
    ap.add_argument("--write", action="store_true", help=f"store beta, alpha and the threshold in {OUT_PARAMS.name}")
    a = ap.parse_args(argv)
    if a.image_domain:
        return fit_image_domain(a.answerer, a.write, A.REPO / "eval" / "results" / "answerer_image_domain.json")
    if not (a.work and a.index and a.pipeline):
        ap.error("--work, --index and --pipeline are required (or --image-domain)")

    import torch

    from ragmed.eval.vqa import closed_correct
    from ragmed.generate.answerer.model import Answerer

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    work = Path(a.work)
    _, dev_rows, eval_rows = A.split_rows()
    yn = lambda r: r["closed"] and str(r["answer"]).strip().lower() in ("yes", "no")  # noqa: E731
    dev = [r for r in dev_rows if r["closed"]]
    ev = [r for r in eval_rows if r["closed"]]
    dvotes = A.retrieve_evidence_votes(Path(a.index), Path(a.pipeline), dev, work / "votes_dev.json")
    evotes = json.loads((work / "votes_v2.json").read_text())
    qv, ims = TA.features(dev, work / "features_train.npz")
    qv2, ims2 = TA.features(ev, work / "features_eval.npz")
    qv.update(qv2)
    ims.update(ims2)
    ans = Answerer(a.answerer)

    # fit on the dev slice's yes/no questions (gold yes/no)
    dyn = [r for r in dev if yn(r)]
    py, (wy, wn) = p_yes(ans, dyn, qv, ims), weights(dyn, dvotes)
    gold = np.array([str(r["answer"]).strip().lower() == "yes" for r in dyn], dtype=float)
    grid = []
    for beta in np.round(np.arange(0, 3.01, 0.1), 2):
        for alpha in (0.1, 0.25, 0.5, 1.0):
            p = np.clip(pooled(py, wy, wn, beta, alpha), 1e-6, 1 - 1e-6)
            ll = float(np.mean(gold * np.log(p) + (1 - gold) * np.log(1 - p)))
            grid.append({"beta": float(beta), "alpha": alpha, "dev_loglik": round(ll, 5),
                         "dev_accuracy": round(float(np.mean((p >= 0.5) == gold)), 4)})
    best = max(grid, key=lambda g: (g["dev_loglik"], -g["beta"]))
    beta, alpha = best["beta"], best["alpha"]

    def predict(rows, votes, b, alpha=alpha):
        """(answers, confidences) of the closed policy for rows: yes/no pooled, either/or as before."""
        from ragmed.generate.answerer.model import choose
        from ragmed.generate.chat import closed_choices

        q = np.stack([qv[r["question"]] for r in rows])
        arr = np.stack([ims[r["image"][1]] for r in rows]) if ans.image_branch else None
        probs = np.concatenate([ans.probabilities(q[i:i + 128], None if arr is None else arr[i:i + 128])
                                for i in range(0, len(rows), 128)])
        out, conf = [], []
        y_, n_ = weights(rows, votes)
        for i, (r, p) in enumerate(zip(rows, probs)):
            ch = closed_choices(r["question"])
            if sorted(ch) == ["no", "yes"]:
                pyi = p[ans.index["yes"]] / max(p[ans.index["yes"]] + p[ans.index["no"]], 1e-12)
                pp = float(pooled(np.array([pyi]), y_[i:i + 1], n_[i:i + 1], b, alpha)[0])
                out.append("yes" if pp >= 0.5 else "no")
                conf.append(max(pp, 1 - pp))
            else:
                c, cf = choose(p, ans.index, ch)
                out.append(c or "yes")
                conf.append(cf)
        return out, conf

    res = {"schema": 1, "task": "evidence-pooling",
           "command": "python eval/fit_evidence_pooling.py --work WORK --index IDX --pipeline PIPE.yaml"
                      + (" --write" if a.write else ""),
           "formula": "logit P(yes) = logit P_clf(yes) + beta * log((W_yes + alpha) / (W_no + alpha))",
           "fitted_on": f"dev slice of the training part of {A.SPLIT.name}: {len(dyn)} yes/no questions "
                        f"({len(dev)} closed)", "beta": beta, "alpha": alpha, "grid_best": best,
           "dev_classifier_alone": next(g for g in grid if g["beta"] == 0 and g["alpha"] == alpha),
           "dev_share_with_votes": round(float(np.mean((wy + wn) > 0)), 4)}
    thresholds = {}
    for name, b in (("classifier", 0.0), ("pooled", beta)):
        dp, dc = predict(dev, dvotes, b)
        dok = [float(closed_correct(p, r["answer"])) for p, r in zip(dp, dev)]
        thresholds[name] = EA.calibrate_closed(dok, dc)
        ep, ec = predict(ev, evotes, b)
        eok = [float(closed_correct(p, r["answer"])) for p, r in zip(ep, ev)]
        kept = np.asarray(ec) >= thresholds[name]
        res[f"eval_{name}"] = {"closed_accuracy": round(float(np.mean(eok)), 4),
                               "risk_coverage": EA.coverage_curve(eok, ec),
                               "threshold": thresholds[name], "coverage_at_threshold": round(float(kept.mean()), 4),
                               "accuracy_at_threshold": round(float(np.mean(np.asarray(eok)[kept])), 4) if kept.any()
                               else None, "yes_share": round(float(np.mean([p == "yes" for p in ep])), 4),
                               "dev_closed_accuracy": round(float(np.mean(dok)), 4)}
        res.setdefault("_ok", {})[name] = eok
    # the trade-off, reported (not used to choose): closed accuracy at other weights, dev and evaluation half
    res["sweep_alpha_0.5"] = []
    for b in (0.0, 0.5, 1.0, 2.0, 4.0):
        row = {"beta": b}
        for name, rows, votes in (("dev", dev, dvotes), ("eval", ev, evotes)):
            pr, _ = predict(rows, votes, b) if alpha == 0.5 else _predict_alpha(predict, rows, votes, b)
            row[f"{name}_closed_accuracy"] = round(float(np.mean([closed_correct(x, r["answer"])
                                                                  for x, r in zip(pr, rows)])), 4)
            row[f"{name}_yes_share"] = round(float(np.mean([x == "yes" for x in pr])), 4)
        res["sweep_alpha_0.5"].append(row)
    # paired bootstrap over evaluation images of pooled − classifier closed accuracy
    ok = res.pop("_ok")
    imgs = sorted({r["image"][1] for r in ev})
    by = {n: [i for i, r in enumerate(ev) if r["image"][1] == n] for n in imgs}
    d = np.asarray(ok["pooled"]) - np.asarray(ok["classifier"])
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(1000):
        idx = np.concatenate([by[imgs[j]] for j in rng.integers(0, len(imgs), len(imgs))])
        boots.append(d[idx].mean())
    res["eval_difference_pooled_minus_classifier"] = {"mean": round(float(d.mean()), 4),
                                                      "ci95": [round(float(np.quantile(boots, 0.025)), 4),
                                                               round(float(np.quantile(boots, 0.975)), 4)],
                                                      "n_closed": len(ev), "n_images": len(imgs)}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    Path(a.out).write_text(json.dumps(res, indent=1))
    if a.write:
        OUT_PARAMS.write_text(json.dumps({
            "beta": beta, "alpha": alpha, "min_closed_confidence": thresholds["pooled"],
            "formula": res["formula"], "fitted_on": res["fitted_on"], "command": res["command"],
            "result": "eval/results/evidence_pooling.json"}, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "grid"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
