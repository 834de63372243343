"""The build flow: a corpus and a pipeline config in, a published index version out, in one pass over the images.

read corpus → decode each image once → route (domain sub-index) → encode → write vectors + metadata → FAISS →
BM25 + one calibration artefact (channel quantiles and evidence floors) → router classifier fitted from the vectors
and image statistics gathered during that same pass → publish (the ``current`` swap happens only when every artefact
is written, so a build killed at any point leaves the previous version whole).

``build_from_config(corpus, out, cfg)``: see :func:`ragmed.index.build_index` for the index part; the report's
``post_build`` summarises BM25, calibration and the router fit. The router's image statistics
(:func:`ragmed.domains.content_features`) are stored beside the image vectors (parts of kind ``features``), so adding
to an index (``add=True``) refits the router on the whole index from stored vectors and statistics, decoding only the
new images. (An index built before the statistics were stored is decoded again for it, once.)
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("ragmed.pipeline")


def build_from_config(corpus, out: str | Path, cfg, *, add: bool = False, progress: bool = True,
                      fit: bool | None = None, **kw):
    """Index ``corpus`` at ``out`` with the pipeline ``cfg`` (``fit``: override ``index.fit_image_encoder``)."""
    from ragmed.index import build_index
    from ragmed.pipeline.components import Components

    comps = Components.from_config(cfg, out)
    text_encoder = kw.pop("text_encoder", None) or comps.text_encoder
    image_encoder = kw.pop("image_encoder", None)
    fitting = cfg.index.fit_image_encoder if fit is None else fit
    if image_encoder is None and not fitting:
        image_encoder = comps.image_encoder  # (a fitted tower is created by build_index and loaded from the index)
    router = features = None
    if cfg.domains:
        from ragmed.domains import build_router, content_features

        router = build_router(cfg, image_encoder=image_encoder, text_encoder=text_encoder).route_case
        features = content_features

    def before_publish(store, *, image_encoder, text_encoder) -> dict:
        return fit_router_step(store, cfg, image_encoder, corpus_root=corpus.root)

    return build_index(corpus, out, cfg, router=router, add=add, progress=progress, text_encoder=text_encoder,
                       image_encoder=image_encoder, fit=fit, image_features=features,
                       before_publish=before_publish if cfg.domains else None, **kw)


def build_from_config_ray(corpus, out: str | Path, cfg, *, progress: bool = True, **kw):
    """As :func:`build_from_config` on the Ray engine (:mod:`ragmed.index.ray_build`): decoding and encoding run in
    Ray actors (the router, when configured, is built inside each actor from the actor's encoders); BM25 and the
    retrieval calibration are written before the version is published, as in the local build. With domains, the
    router's classifier is then fitted on the published version (by decoding the indexed images again)."""
    from ragmed.index import open_index
    from ragmed.index.ray_build import ray_build_index
    from ragmed.pipeline.components import Components

    text_encoder = Components.from_config(cfg, out).text_encoder
    factory = None
    if cfg.domains:
        def factory(text, image, _cfg=cfg):
            from ragmed.domains import build_router

            return build_router(_cfg, image_encoder=image, text_encoder=text).route_case
    report = ray_build_index(corpus, out, cfg, router_factory=factory, text_encoder=text_encoder, progress=progress,
                             **kw)
    if cfg.domains:
        image_encoder = Components.from_config(cfg, out).image_encoder  # the index's own (as the actors loaded it)
        report.post_build = fit_router_step(open_index(out), cfg, image_encoder, corpus_root=corpus.root)
    return report


def fit_router_step(store, cfg, image_encoder, *, corpus_root) -> dict:
    """Fit the router's classifier into the (staging) version from the index's own image vectors and the image
    statistics stored beside them; an index without stored statistics (built before they were, or by the Ray engine)
    is decoded again for them."""
    from ragmed.domains import fit_router, fit_router_from_features

    if image_encoder is None:
        return {"router": {"fitted": False, "reason": "no image encoder"}}
    params = cfg.router.params
    max_per_domain = int(params.get("fit_max_per_domain", 200))
    domains = [d.name for d in cfg.domains]
    vec_by_id: dict[int, np.ndarray] = {}
    feat_by_id: dict[int, np.ndarray] = {}
    domain_of: dict[int, str] = {}
    complete = True
    for dom in store.domains:
        if dom not in domains:
            continue
        ids, vecs = store.vectors(dom, "image")
        fids, feats = store.vectors(dom, "features")
        if len(fids) != len(ids):
            complete = False
            break
        vec_by_id.update({int(i): v for i, v in zip(ids, vecs)})
        feat_by_id.update({int(i): f for i, f in zip(fids, feats)})
        domain_of.update({int(i): dom for i in ids})
    if not complete or set(vec_by_id) != set(feat_by_id):
        return {"router": fit_router(store, corpus_root, image_encoder, domains=domains,
                                     max_per_domain=max_per_domain)}
    rows = [(vid, domain_of[vid]) for vid in sorted(vec_by_id)]
    return {"router": fit_router_from_features(store.version_dir, rows,
                                               lambda vid: np.concatenate([vec_by_id[vid], feat_by_id[vid]]),
                                               image_encoder.id, domains=domains, max_per_domain=max_per_domain)}
