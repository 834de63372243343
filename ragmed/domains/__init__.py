"""The domain router: which configured domain (chest X-ray, CT, MRI, ultrasound, pathology …) an image belongs to.

``build_router(cfg, ...) -> DomainRouter``; ``router.route(image) -> Route(domain, confidence, reason)`` (a Route
unpacks as that triple). The domains come from the pipeline YAML (``domains:``); each has its own sub-index.

Evidence is tried in the order ``router.params.order`` (default, for ``router.name`` ``auto`` or ``tags``: tags,
classifier, zero-shot; ``router.name: zero-shot`` or ``classifier``: tags then that step only). The issue text put
zero-shot before the classifier; measured (eval/results/router_eval_ragmed_default*.json) the bundled ragmed-default
encoder routes 33% of held-out images right zero-shot against 97% with the classifier fitted on the index, so a
fitted classifier goes first and zero-shot is the fallback for an index without one.

1. **DICOM tags**: ``Modality`` matched against each domain's ``modalities``, ``BodyPartExamined`` against its
   ``body_parts`` (``view`` is reported). A DICOM modality that no domain lists (other than the generic ``OT``/``SC``)
   is refused with :class:`~ragmed.errors.DomainError`.
2. **classifier**: a logistic regression (scikit-learn) fitted at index-build time on the index's own routed cases
   (image vector + a few colour statistics), stored as ``router.json`` + ``router.npz`` in the index version
   directory. An image farther from every domain than the fitted limit (3 × the 99th percentile of the training
   images' own distance, diagonal Gaussian per domain) is refused.
3. **zero-shot**: when the image encoder shares the text encoder's space, the image vector against each domain's
   description and against a few non-medical descriptions (photo, document, blank); a non-medical best match is refused.

Content checks run first (:func:`ragmed.domains.ood.check_image`, which every pipeline runs, with or without domains)
and refuse a blank frame, a thumbnail, random noise, a text document, a texture or a natural photograph.
Confidence below ``router.threshold`` gives ``domain=None``, which the
pipeline answers by searching every domain's index and merging by calibrated score.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragmed.errors import ConfigError, DomainError
from ragmed.registry import Registry

GENERIC_MODALITIES = frozenset({"OT", "SC", ""})
DEFAULT_ORDER = ("tags", "classifier", "zero-shot")
UNROUTED = "unrouted"  # build-time sub-index for cases that no label, tag or zero-shot match placed
NEGATIVE_DESCRIPTIONS = (
    "a photograph of people, animals, buildings or everyday objects",
    "a scanned page of printed text, a document or a form",
    "a blank empty image",
    "random noise",
)


@dataclass
class Route:
    """The router's decision. ``domain`` is None when the router is not confident: search every domain."""

    domain: str | None
    confidence: float
    reason: str
    method: str = "none"  # "tags" | "zero-shot" | "classifier" | "label" | "none"
    best: str | None = None  # best-scoring domain even when below the threshold
    scores: dict[str, float] = field(default_factory=dict)

    def __iter__(self):  # domain, confidence, reason = router.route(img)
        return iter((self.domain, self.confidence, self.reason))

    def to_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "confidence": round(self.confidence, 4), "reason": self.reason,
                "method": self.method, "best": self.best,
                "scores": {k: round(v, 4) for k, v in self.scores.items()}}


def _up(values) -> set[str]:
    return {str(v).strip().upper() for v in values if str(v).strip()}


from ragmed.domains.ood import check_content, check_image, content_features  # noqa: E402  (pixel checks live there)

check_not_blank = check_content  # the old name


class RouterClassifier:
    """Multinomial logistic regression over (image vector ⊕ content features), plus a per-domain diagonal-Gaussian distance limit
    for refusing images that look like none of the indexed ones. Saved as JSON + NPZ (no pickles)."""

    def __init__(self, classes: list[str], coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray,
                 scale: np.ndarray, class_mean: np.ndarray, class_std: np.ndarray, ood_floor: float, encoder_id: str,
                 meta: dict | None = None):
        self.classes, self.coef, self.intercept = list(classes), coef, intercept
        self.mean, self.scale, self.ood_floor = mean, scale, float(ood_floor)
        self.class_mean, self.class_std = class_mean, class_std
        self.encoder_id = encoder_id
        self.meta = meta or {}

    def _z(self, feats: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(feats) - self.mean) / self.scale

    def predict_proba(self, feats: np.ndarray) -> np.ndarray:
        logits = self._z(feats) @ self.coef.T + self.intercept
        if len(self.classes) == 2 and logits.shape[1] == 1:
            logits = np.concatenate([-logits / 2, logits / 2], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def ood_score(self, feats: np.ndarray) -> np.ndarray:
        """Mean squared z-score under the nearest class's diagonal Gaussian (standardised features): ~1 for typical
        indexed images, large for images unlike every domain."""
        z = self._z(feats)[:, None, :]
        d = ((z - self.class_mean[None]) / self.class_std[None]) ** 2
        return d.mean(axis=2).min(axis=1)

    @classmethod
    def fit(cls, feats: np.ndarray, labels: list[str], encoder_id: str, *, C: float = 1.0, ood_factor: float = 3.0,
            seed: int = 0) -> "RouterClassifier":
        from sklearn.linear_model import LogisticRegression

        X = np.asarray(feats, dtype=np.float64)
        mean, scale = X.mean(axis=0), X.std(axis=0)
        scale[scale < 1e-6] = 1.0
        Z = (X - mean) / scale
        clf = LogisticRegression(C=C, max_iter=2000, random_state=seed)
        clf.fit(Z, labels)
        y = np.asarray(labels)
        cm = np.stack([Z[y == c].mean(axis=0) for c in clf.classes_]).astype(np.float32)
        cs = np.stack([np.maximum(Z[y == c].std(axis=0), 0.3) for c in clf.classes_]).astype(np.float32)
        counts = {str(c): int((y == c).sum()) for c in clf.classes_}
        out = cls([str(c) for c in clf.classes_], clf.coef_.astype(np.float32), clf.intercept_.astype(np.float32),
                  mean.astype(np.float32), scale.astype(np.float32), cm, cs, 0.0, encoder_id,
                  {"n_per_class": counts, "C": C, "ood_factor": ood_factor,
                   "train_accuracy": float(clf.score(Z, labels))})
        out.ood_floor = float(ood_factor * np.percentile(out.ood_score(X), 99))
        return out

    def save(self, version_dir: str | Path) -> None:
        import json
        import os

        d = Path(version_dir)
        tmp = d / ".router.tmp.npz"
        np.savez(tmp, coef=self.coef, intercept=self.intercept, mean=self.mean, scale=self.scale,
                 class_mean=self.class_mean, class_std=self.class_std)
        os.replace(tmp, d / "router.npz")
        info = {"kind": "logistic-regression", "classes": self.classes, "ood_floor": self.ood_floor,
                "encoder_id": self.encoder_id, "features": "image vector + content_features (10)", **self.meta}
        (d / ".router.tmp.json").write_text(json.dumps(info, indent=2))
        os.replace(d / ".router.tmp.json", d / "router.json")

    @classmethod
    def load(cls, version_dir: str | Path) -> "RouterClassifier | None":
        import json

        d = Path(version_dir)
        if not (d / "router.json").exists() or not (d / "router.npz").exists():
            return None
        info = json.loads((d / "router.json").read_text())
        with np.load(d / "router.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("coef", "intercept", "mean", "scale", "class_mean", "class_std")}
        meta = {k: v for k, v in info.items() if k not in ("classes", "ood_floor", "encoder_id", "kind", "features")}
        return cls(info["classes"], ood_floor=info["ood_floor"], encoder_id=info["encoder_id"], meta=meta, **arrays)


class DomainRouter:
    """Routes a :class:`~ragmed.io.MedicalImage` to one of the configured domains (see the module docstring)."""

    def __init__(self, domains: list, *, threshold: float = 0.5, refuse_below: float = 0.0,
                 order: tuple[str, ...] | list[str] = DEFAULT_ORDER, image_encoder=None, text_encoder=None,
                 classifier: RouterClassifier | None = None, unknown_modality: str = "refuse",
                 temperature: float = 0.05, negatives: tuple[str, ...] | list[str] = NEGATIVE_DESCRIPTIONS,
                 ood_margin: float = 1.0, build_zero_shot: bool = False):
        if not domains:
            raise ConfigError("the router needs at least one domain in the pipeline's `domains:` section")
        names = [d.name for d in domains]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate domain names in the pipeline: {names}")
        bad = [o for o in order if o not in DEFAULT_ORDER]
        if bad:
            raise ConfigError(f"router.params.order: unknown step(s) {bad}; use some of {list(DEFAULT_ORDER)}")
        if unknown_modality not in ("refuse", "search-all"):
            raise ConfigError("router.params.unknown_modality must be 'refuse' or 'search-all'")
        self.domains = list(domains)
        self.names = names
        self.threshold, self.refuse_below = float(threshold), float(refuse_below)
        self.order = tuple(order)
        self.image_encoder, self.text_encoder, self.classifier = image_encoder, text_encoder, classifier
        self.unknown_modality = unknown_modality
        self.temperature = float(temperature)
        self.negatives = list(negatives)
        self.ood_margin = float(ood_margin)
        self.build_zero_shot = bool(build_zero_shot)
        self._desc_vecs = None

    # --- the steps ---------------------------------------------------------------------------------------------
    def by_tags(self, image) -> Route | None:
        if getattr(image, "format", None) != "dicom":
            return None
        mod = (image.modality or "").strip().upper()
        if mod in GENERIC_MODALITIES:
            return None
        bp = (image.body_part or "").strip().upper()
        scores: dict[str, float] = {}
        for d in self.domains:
            if mod not in _up(d.modalities):
                continue
            parts = _up(d.body_parts)
            if not parts:
                scores[d.name] = 0.9
            elif bp and bp in parts:
                scores[d.name] = 1.0
            elif not bp:
                scores[d.name] = 0.6
        tag_text = f"DICOM Modality={mod}" + (f", BodyPartExamined={bp}" if bp else "") + (
            f", view={image.view}" if image.view else "")
        if not scores:
            if self.unknown_modality == "search-all":
                return Route(None, 0.0, f"{tag_text}: no configured domain lists it; searching every domain", "tags")
            raise DomainError(f"{tag_text} fits none of the configured domains ({', '.join(self.names)})",
                              path=image.source, remedy="add a domain for it to the pipeline's `domains:` or ask "
                                                        "without the image")
        best = max(scores, key=scores.get)
        conf = scores[best] / (1.0 if len(scores) == 1 else sum(1 for v in scores.values() if v == scores[best]))
        return Route(best, conf, tag_text, "tags", best, scores)

    def _zero_shot_ready(self) -> bool:
        ie, te = self.image_encoder, self.text_encoder
        return (ie is not None and te is not None and getattr(ie, "space", None) is not None
                and ie.space == getattr(te, "space", None))

    def by_zero_shot(self, image, vec: np.ndarray | None = None) -> Route | None:
        if not self._zero_shot_ready():
            return None
        if self._desc_vecs is None:
            texts = [d.description or d.name.replace("-", " ") for d in self.domains] + self.negatives
            self._desc_vecs = self.text_encoder.encode_texts(texts)
        v = vec if vec is not None else self.image_encoder.encode_images([image])[0]
        sims = self._desc_vecs @ v
        logits = sims / self.temperature
        p = np.exp(logits - logits.max())
        p /= p.sum()
        n = len(self.domains)
        top = int(np.argmax(p))
        scores = {self.names[i]: float(p[i]) for i in range(n)}
        if top >= n:
            raise DomainError(f"the image looks like {self.negatives[top - n]!r} (zero-shot p={p[top]:.2f}), not "
                              "like any configured domain", path=image.source,
                              remedy="send a medical image of a configured domain")
        dom_p = p[:n] / p[:n].sum()
        return Route(self.names[top], float(dom_p[top]), f"zero-shot: cosine {sims[top]:.3f} to the description of "
                     f"{self.names[top]!r}", "zero-shot", self.names[top], scores)

    def by_classifier(self, image, vec: np.ndarray | None = None) -> Route | None:
        clf = self.classifier
        if clf is None or self.image_encoder is None:
            return None
        if clf.encoder_id != self.image_encoder.id:
            return None
        v = vec if vec is not None else self.image_encoder.encode_images([image])[0]
        f = np.concatenate([v, content_features(image)])[None, :]
        ood = float(clf.ood_score(f)[0])
        if ood > clf.ood_floor * self.ood_margin:
            raise DomainError(f"the image is unlike every indexed domain (distance {ood:.1f} > fitted limit "
                              f"{clf.ood_floor:.1f}); it fits none of the configured domains ({', '.join(self.names)})",
                              path=image.source, remedy="send a medical image of a configured domain")
        p = clf.predict_proba(f)[0]
        top = int(np.argmax(p))
        scores = {c: float(pi) for c, pi in zip(clf.classes, p)}
        return Route(clf.classes[top], float(p[top]), f"classifier: p={p[top]:.2f} (fitted on "
                     f"{sum(clf.meta.get('n_per_class', {}).values())} indexed images)", "classifier",
                     clf.classes[top], scores)

    # --- public -------------------------------------------------------------------------------------------------
    def route(self, image, *, vector: np.ndarray | None = None, check: bool = True) -> Route:
        """Route one image. Raises :class:`DomainError` for an image that fits no domain. ``check=False`` skips the
        content checks (blank / noise / document / photo; for measuring the learned steps alone)."""
        if check:
            check_image(image)
        for step in self.order:
            r = {"tags": self.by_tags, "zero-shot": self.by_zero_shot, "classifier": self.by_classifier}[step](
                image, **({} if step == "tags" else {"vec": vector}))
            if r is None:
                continue
            if r.domain is not None and r.confidence < self.refuse_below:
                raise DomainError(f"domain confidence {r.confidence:.2f} < router.refuse_below {self.refuse_below} "
                                  f"(best {r.domain!r} by {r.method})", path=image.source,
                                  remedy="send a medical image of a configured domain")
            if r.domain is not None and r.confidence < self.threshold:
                r.reason += f"; confidence {r.confidence:.2f} < threshold {self.threshold}: searching every domain"
                r.domain = None
            return r
        return Route(None, 0.0, "no DICOM tags, no zero-shot encoder and no fitted classifier: searching every domain")

    def route_case(self, case, images: list) -> str:
        """Build time: a case's domain from its labels (metadata values listed in a domain's ``labels``), else its
        first image's DICOM tags, else (only with ``router.params.build_zero_shot: true``) zero-shot; otherwise
        ``unrouted``. Never refuses (indexing keeps the case)."""
        values = _up(case.metadata.values()) if getattr(case, "metadata", None) else set()
        for d in self.domains:
            if values & _up(d.labels):
                return d.name
        for im in images[:1]:
            try:
                r = self.by_tags(im)
                if r is not None and r.domain:
                    return r.domain
                if self.build_zero_shot:
                    r = self.by_zero_shot(im)
                    if r is not None and r.domain and r.confidence >= self.threshold:
                        return r.domain
            except DomainError:
                pass
        return UNROUTED


def build_router(cfg, *, image_encoder=None, text_encoder=None, version_dir: str | Path | None = None) -> DomainRouter:
    """The router a pipeline config describes. ``version_dir``: an index version directory holding a fitted
    ``router.json`` / ``router.npz`` (the classifier step)."""
    params = dict(cfg.router.params)
    params.pop("fit_max_per_domain", None)  # used by fit_router at build time
    classifier = RouterClassifier.load(version_dir) if version_dir is not None else None
    kw = {k: params.pop(k) for k in ("order", "unknown_modality", "temperature", "negatives", "ood_margin",
                                     "build_zero_shot") if k in params}
    if params:
        raise ConfigError(f"router.params: unknown key(s) {sorted(params)}; known: order, unknown_modality, "
                          "temperature, negatives, ood_margin, build_zero_shot, fit_max_per_domain")
    return ROUTERS.create(cfg.router.name, domains=cfg.domains, threshold=cfg.router.threshold,
                          refuse_below=cfg.router.refuse_below, image_encoder=image_encoder,
                          text_encoder=text_encoder, classifier=classifier, **kw)


def _router(order: tuple[str, ...]):
    """A router whose evidence order defaults to ``order`` (``router.params.order`` overrides it)."""
    def factory(domains, **kw):
        kw.setdefault("order", order)
        return DomainRouter(domains, **kw)

    return factory


ROUTERS = Registry("router")
ROUTERS.register("auto", _router(DEFAULT_ORDER))
ROUTERS.register("tags", _router(DEFAULT_ORDER))
ROUTERS.register("zero-shot", _router(("tags", "zero-shot")))  # DICOM tags always first; then only that step
ROUTERS.register("classifier", _router(("tags", "classifier")))


def fit_router(store, corpus_root: str | Path, image_encoder, *, domains: list[str], max_per_domain: int = 200,
               min_per_domain: int = 5, seed: int = 0, C: float = 1.0) -> dict:
    """Fit the classifier step on an index's own routed images, decoding them again from the corpus (for an index
    whose build did not gather their statistics, e.g. after ``add``). ``store``: an opened index store (or a version
    directory). Returns a summary (or why it was skipped)."""
    from ragmed.errors import RagmedError
    from ragmed.io import load_image

    if not hasattr(store, "image_rows"):
        from ragmed.index import IndexStore

        store = IndexStore(store, use_gpu=False)
    root = Path(corpus_root)
    rows = [(r["vec_id"], r["domain"]) for r in store.image_rows()]
    source = {r["vec_id"]: r["source"] for r in store.image_rows()}
    failed = 0

    def features_of(vec_ids: list[int]) -> list[np.ndarray | None]:
        nonlocal failed
        ims = []
        for vid in vec_ids:
            p = Path(source[vid])
            try:
                ims.append(load_image(p if p.is_absolute() else root / p, root=root))
            except RagmedError:
                failed += 1
                ims.append(None)
        good = [im for im in ims if im is not None]
        vecs = iter(image_encoder.encode_images(good)) if good else iter(())
        return [None if im is None else np.concatenate([next(vecs), content_features(im)]) for im in ims]

    out = _fit_router(store.version_dir, rows, features_of, image_encoder.id, domains=domains,
                      max_per_domain=max_per_domain, min_per_domain=min_per_domain, seed=seed, C=C)
    if out.get("fitted"):
        out["decode_failed"] = failed
    return out


def fit_router_from_features(version_dir: str | Path, rows: list[tuple[int, str]], features, encoder_id: str, *,
                             domains: list[str], max_per_domain: int = 200, min_per_domain: int = 5, seed: int = 0,
                             C: float = 1.0) -> dict:
    """Fit the classifier step from features the build already has: ``rows`` (vector id, domain) in vector-id order,
    ``features(vector id) -> image vector ⊕ content_features``. The same seeded sample as :func:`fit_router`."""
    out = _fit_router(version_dir, rows, lambda ids: [features(i) for i in ids], encoder_id, domains=domains,
                      max_per_domain=max_per_domain, min_per_domain=min_per_domain, seed=seed, C=C)
    if out.get("fitted"):
        out["decode_failed"] = 0
    return out


def _fit_router(version_dir, rows, features_of, encoder_id: str, *, domains, max_per_domain, min_per_domain, seed,
                C) -> dict:
    rng = np.random.default_rng(seed)
    by_dom: dict[str, list[int]] = {}
    for vid, dom in rows:
        if dom in domains:
            by_dom.setdefault(dom, []).append(vid)
    usable = {d: s for d, s in by_dom.items() if len(s) >= min_per_domain}
    if len(usable) < 2:
        return {"fitted": False, "reason": f"fewer than 2 domains with ≥{min_per_domain} routed images "
                                           f"({ {d: len(s) for d, s in by_dom.items()} })"}
    feats, labels = [], []
    for dom, vids in sorted(usable.items()):
        pick = rng.choice(len(vids), size=min(max_per_domain, len(vids)), replace=False)
        for f in features_of([vids[i] for i in sorted(pick)]):
            if f is not None:
                feats.append(f)
                labels.append(dom)
    clf = RouterClassifier.fit(np.stack(feats), labels, encoder_id, C=C, seed=seed)
    clf.save(version_dir)
    return {"fitted": True, "classes": clf.classes, "n_per_class": clf.meta["n_per_class"],
            "train_accuracy": clf.meta["train_accuracy"], "ood_floor": clf.ood_floor}


__all__ = ["ROUTERS", "DomainRouter", "Route", "RouterClassifier", "build_router", "fit_router", "fit_router_from_features",
           "content_features", "check_content", "check_image", "check_not_blank", "UNROUTED"]
