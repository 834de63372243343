"""Learned out-of-distribution detectors on the shipped image tower, tried against the hand rules of
ragmed/domains/ood.py (issue 12, item 4): do they generalise where the rules do not?

    python eval/ood_detectors.py [--out eval/results/ood_detectors.json] [--negatives 3000] [--work DIR]

``--work DIR`` keeps each phase's tower features (fit images, negatives, each scored set) as ``DIR/<phase>.npz``; a
re-run with the same arguments skips the phases already there (the ~20 min of feature extraction on 2 cores).

Every detector is fitted ONLY on data whose licence allows redistributing what is fitted (the images the shipped
ragmed-default tower was trained on: VQA-RAD CC0, PneumoniaMNIST / BreastMNIST train+val CC BY, BCCD MIT, the CC BY
rows of POCUS; eval/train_default_encoder.py's ``all_samples``), and its threshold is a quantile of the scores of
those medical images under 5-fold cross-fitting (no OOD image sets it):

- ``knn_embedding``: mean cosine distance to the 5 nearest fit images in the tower's 384-d output space;
- ``mahalanobis_features``: Mahalanobis distance (Ledoit-Wolf covariance) of the per-stage channel means and spreads
  of the tower's feature maps (Lee et al. 2018 style), and the same on grey images only (``_grey``: fit on the grey
  fit images, applied only to grey inputs, since the licensed data covers radiology but barely any colour medicine);
- ``logistic_synthetic``: logistic regression on those tower features + the embedding, positives = the fit images,
  negatives = procedurally generated images (dead-leaves images with power-law sizes, blur, shading and noise; 1/f
  spectral noise; grey and colour; 24-256 px; seeded), i.e. no photograph from any package.

Scored on the sets of eval/safety_ood.py (named refuse set, shared medical folders, held-out public images), alone and
OR-ed with the shipped rules (refuse if either refuses). Medical folders the detectors never saw: HAM10000, LC25000,
brain-tumor-mri, the DICOM samples, the PneumoniaMNIST / BreastMNIST *test* splits, the CC BY-NC POCUS rows.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import safety_ood as S  # noqa: E402
import train_default_encoder as TD  # noqa: E402

REPO = S.REPO


def tower_features(enc, arrs: list[np.ndarray], desc: str = "features") -> np.ndarray:
    """Per image: mean and spread of every stage's channels, the last stage's channel maxima, then the embedding."""
    import torch
    from tqdm import tqdm

    from ragmed.encoders.tower import to_tensor_batch

    m, out = enc.model, []
    for i in tqdm(range(0, len(arrs), 128), desc=desc, unit="batch", file=sys.stderr):
        x = to_tensor_batch(np.stack(arrs[i:i + 128]), enc.preprocess_config)
        with torch.inference_mode():
            h, parts = x, []
            for layer in m.features:
                h = layer(h)
                parts += [h.mean(dim=(2, 3)), h.std(dim=(2, 3))]
            parts.append(h.amax(dim=(2, 3)))
            e = m(x)
            e = e / e.norm(dim=1, keepdim=True)
        out.append(np.concatenate([torch.cat(parts, 1).numpy(), e.numpy()], 1))
    return np.concatenate(out)


def dead_leaves(rng, size: int, grey: bool) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFilter

    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(img)
    rmin, rmax = max(1.0, size / 64), size / 2
    for _ in range(int(rng.integers(30, 400))):
        r = (rmin ** -2 - rng.random() * (rmin ** -2 - rmax ** -2)) ** -0.5  # p(r) ∝ r^-3
        x, y = rng.random(2) * size
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        k = int(rng.integers(0, 3))
        if k == 0:
            d.ellipse([x - r, y - r * rng.uniform(0.5, 1.5), x + r, y + r * rng.uniform(0.5, 1.5)], fill=c)
        elif k == 1:
            d.rectangle([x - r, y - r * rng.uniform(0.3, 1.5), x + r, y + r], fill=c)
        else:
            ang = np.sort(rng.random(int(rng.integers(3, 7)))) * 2 * np.pi
            d.polygon([(x + r * np.cos(t), y + r * np.sin(t)) for t in ang], fill=c)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, size / 100 + 0.5)))
    a = np.asarray(img, dtype=np.float32)
    if rng.random() < 0.5:
        yy, xx = np.mgrid[0:size, 0:size] / size
        a = a * (0.6 + 0.4 * (rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy + 1) / 2)[..., None]
    if rng.random() < 0.3:
        a = a + rng.normal(0, rng.uniform(2, 12), a.shape)
    a = np.clip(a, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(a).convert("L")) if grey else a


def spectral(rng, size: int, grey: bool) -> np.ndarray:
    f = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None] ** 2
    f[0, 0] = 1
    amp = f ** (-rng.uniform(1.5, 3.0) / 2)
    amp[0, 0] = 0
    chans = []
    for _ in range(1 if grey else 3):
        x = np.real(np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((size, size)))))
        chans.append((x - x.mean()) / (x.std() + 1e-9))
    a = 128 + rng.uniform(30, 70) * (chans[0] if grey else np.stack(chans, -1))
    return np.clip(a, 0, 255).astype(np.uint8)


def cached(work: Path | None, phase: str, make):
    """``make()`` → (features, JSON-able metadata), kept as ``work/<phase>.npz`` when ``work`` is given and read back
    from there on a re-run (resume)."""
    f = work / f"{phase}.npz" if work else None
    if f is not None and f.exists():
        d = np.load(f, allow_pickle=False)
        print(f"{phase}: features read from {f.name}", file=sys.stderr)
        return d["X"], json.loads(str(d["meta"]))
    X, meta = make()
    if f is not None:
        np.savez(f.with_suffix(".tmp.npz"), X=X, meta=json.dumps(meta))
        f.with_suffix(".tmp.npz").replace(f)
    return X, meta


def negatives(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        size, grey = int(rng.choice([24, 28, 32, 48, 64, 96, 128, 192, 256])), bool(rng.random() < 0.5)
        out.append(dead_leaves(rng, size, grey) if rng.random() < 0.75 else spectral(rng, size, grey))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "eval" / "results" / "ood_detectors.json"))
    ap.add_argument("--per-folder", type=int, default=150)
    ap.add_argument("--negatives", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="keep each phase's features here and resume from them")
    a = ap.parse_args()
    work = Path(a.work) if a.work else None
    if work:
        work.mkdir(parents=True, exist_ok=True)
    import torch
    from sklearn.covariance import LedoitWolf
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ragmed.encoders import create_encoder
    from ragmed.encoders.tower import letterbox_array_uint8, letterbox_uint8
    from ragmed.io import load_image

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    enc = create_encoder("ragmed-default", threads=1)
    size = enc.preprocess_config.size
    def fit_phase():
        fit_arrs, grey = [], []
        for s in TD.all_samples():
            p = s.pixels() if callable(s.pixels) else s.pixels
            fit_arrs.append(letterbox_array_uint8(p, size) if p.dtype == np.uint8 else letterbox_uint8(p, size))
            grey.append(p.ndim == 2)
        return tower_features(enc, fit_arrs, "fit images"), grey

    def negative_phase():
        neg = negatives(a.negatives, a.seed)
        return tower_features(enc, [letterbox_array_uint8(x, size) for x in neg], "synthetic negatives"), len(neg)

    tag = f"seed{a.seed}"
    Xf, fit_grey = cached(work, f"fit_{tag}", fit_phase)
    fit_grey = np.array(fit_grey, dtype=bool)
    Xn, n_neg = cached(work, f"negatives_{a.negatives}_{tag}", negative_phase)
    sets = {}
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        for name, items in (("refuse", lambda: S.refuse_set(w, a.seed)),
                            ("accept", lambda: S.accept_set(w, a.per_folder, a.seed)),
                            ("heldout", lambda: S.heldout_set(w))):
            def set_phase(name=name, items=items):
                rows, arrs = [], []
                for kind, nm, path in items():
                    ok, _ = S.decide(path)
                    try:
                        im = load_image(path)
                    except Exception:  # not decodable: refused by the loader, no features
                        rows.append({"kind": kind, "name": nm, "rules_accept": ok, "grey": True, "decodable": False})
                        continue
                    rows.append({"kind": kind, "name": nm, "rules_accept": ok, "grey": not im.is_color,
                                 "decodable": True})
                    arrs.append(enc.preprocess(im))
                return tower_features(enc, arrs, name), rows

            X, rows = cached(work, f"{name}_{a.per_folder}_{tag}", set_phase)
            sets[name] = (rows, X)
    emb, feat = slice(1216, 1600), slice(0, 1216)
    rng = np.random.default_rng(a.seed)

    def knn(q, ref):
        s = q[:, emb] @ ref[:, emb].T
        return 1 - np.sort(s, 1)[:, -5:].mean(1)

    def maha_fit(ref):
        mu = ref[:, feat].mean(0)
        prec = LedoitWolf().fit(ref[:, feat] - mu).precision_
        return lambda q: np.sqrt(np.einsum("ij,jk,ik->i", q[:, feat] - mu, prec, q[:, feat] - mu))

    def logistic_fit(pos, negs):
        X, y = np.concatenate([pos, negs]), np.r_[np.ones(len(pos)), np.zeros(len(negs))]
        sw = np.where(y == 1, 0.5 / len(pos), 0.5 / len(negs)) * len(y)
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
        clf.fit(X, y, logisticregression__sample_weight=sw)
        return lambda q: -clf.decision_function(q)  # higher = more OOD

    def crossfit(make, X, extra=None):
        folds, sc = rng.integers(0, 5, len(X)), np.zeros(len(X))
        for f in range(5):
            fn = make(X[folds != f]) if extra is None else make(X[folds != f], extra)
            sc[folds == f] = fn(X[folds == f])
        return sc

    detectors = {
        "knn_embedding": (lambda ref: (lambda q: knn(q, ref)), Xf, False),
        "mahalanobis_features": (maha_fit, Xf, False),
        "mahalanobis_features_grey": (maha_fit, Xf[fit_grey], True),
        "logistic_synthetic": (lambda ref: logistic_fit(ref, Xn), Xf, False),
    }
    res = {"task": "ood_detectors", "command": f"python eval/ood_detectors.py --negatives {a.negatives} "
                                               f"--per-folder {a.per_folder} --seed {a.seed}",
           "fit_images": int(len(Xf)), "fit_grey_images": int(fit_grey.sum()), "synthetic_negatives": n_neg,
           "rules_alone": {}, "detectors": {}}
    for name, (rows, _) in sets.items():
        res["rules_alone"][name] = _shares(name, rows, [not r["rules_accept"] for r in rows])
    for dname, (make, ref, grey_only) in detectors.items():
        cv = crossfit(make, ref)
        fn = make(ref)
        res["detectors"][dname] = {}
        for q in (0.995, 1.0):
            th = float(np.quantile(cv, q))
            out = {"threshold_quantile_of_medical_fit_scores": q}
            for name, (rows, X) in sets.items():
                sc = iter(fn(X)) if len(X) else iter(())
                alone, both = [], []
                for r in rows:
                    s = next(sc) if r["decodable"] else np.inf
                    refuse = bool(s > th) and (r["grey"] or not grey_only)
                    alone.append(refuse or not r["decodable"])
                    both.append(refuse or not r["rules_accept"])
                out[name] = {"alone": _shares(name, rows, alone), "or_rules": _shares(name, rows, both)}
            res["detectors"][dname][f"q{q}"] = out
    res["seconds"] = round(time.perf_counter() - t0, 1)
    Path(a.out).write_text(json.dumps(res, indent=1))
    for dname, d in res["detectors"].items():
        for q, o in d.items():
            print(dname, q, {k: {m: (v[m].get("refused_share"), v[m].get("accepted_share")) for m in v}
                             for k, v in o.items() if isinstance(v, dict)})


def _shares(name: str, rows: list[dict], refused: list[bool]) -> dict:
    if name == "refuse":
        ph = [f for r, f in zip(rows, refused) if r["kind"] in ("photo", "text-page")]
        return {"refused_share": round(float(np.mean(refused)), 4), "photo_text_refused": round(float(np.mean(ph)), 4),
                "passed": [r["name"] for r, f in zip(rows, refused) if not f]}
    if name == "accept":
        by = {}
        for r, f in zip(rows, refused):
            by.setdefault(r["kind"], []).append(not f)
        return {"accepted_share": round(float(np.mean([not f for f in refused])), 4),
                "by_folder": {k: round(float(np.mean(v)), 3) for k, v in by.items()}}
    ref = [f for r, f in zip(rows, refused) if r["kind"] == "refuse"]
    acc = [not f for r, f in zip(rows, refused) if r["kind"] == "accept"]
    return {"refused_share": round(float(np.mean(ref)), 4), "accepted_share": round(float(np.mean(acc)), 4),
            "n_refuse": len(ref), "n_accept": len(acc)}


if __name__ == "__main__":
    main()
