"""Index building from a pipeline config.

``build_from_config`` builds the index (the router, when ``domains:`` is configured, assigns each case its domain
sub-index), then runs :func:`post_build` on the live version: the BM25 index over the report text, the per-domain
retrieval calibration (``retrieval_calibration.json``) and, with domains, the router's classifier
(``router.json`` / ``router.npz``).
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("ragmed.pipeline")


def build_from_config(corpus, out: str | Path, cfg, *, add: bool = False, progress: bool = True, **kw):
    from ragmed.index import build_index

    from ragmed.pipeline import Pipeline

    pipe = Pipeline(cfg, index=out)
    text_encoder = kw.pop("text_encoder", None) or pipe.text_encoder
    image_encoder = kw.pop("image_encoder", None)
    if image_encoder is None and not cfg.index.fit_image_encoder:
        image_encoder = pipe.image_encoder  # (a fitted tower is created by build_index and loaded from the index)
    router = None
    if cfg.domains:
        from ragmed.domains import build_router

        router = build_router(cfg, image_encoder=image_encoder, text_encoder=text_encoder).route_case
    report = build_index(corpus, out, cfg, router=router, add=add, progress=progress, text_encoder=text_encoder,
                         image_encoder=image_encoder, **kw)
    if image_encoder is None and cfg.encoders.image is not None:  # built by build_index (fitted or not)
        image_encoder = Pipeline(cfg, index=out).image_encoder
    report.post_build = post_build(out, cfg, corpus_root=corpus.root, text_encoder=text_encoder,
                                   image_encoder=image_encoder)
    return report


def build_from_config_ray(corpus, out: str | Path, cfg, *, progress: bool = True, **kw):
    """As :func:`build_from_config` on the Ray engine (``ragmed.index.ray_build``): the router, when configured, is
    built inside each Ray actor from the actor's encoders; then the same :func:`post_build`."""
    from ragmed.index.ray_build import ray_build_index

    from ragmed.pipeline import Pipeline

    text_encoder = Pipeline(cfg, index=out).text_encoder
    factory = None
    if cfg.domains:
        def factory(text, image, _cfg=cfg):
            from ragmed.domains import build_router

            return build_router(_cfg, image_encoder=image, text_encoder=text).route_case
    report = ray_build_index(corpus, out, cfg, router_factory=factory, text_encoder=text_encoder, progress=progress,
                             **kw)
    image_encoder = Pipeline(cfg, index=out).image_encoder if cfg.encoders.image is not None else None
    report.post_build = post_build(out, cfg, corpus_root=corpus.root, text_encoder=text_encoder,
                                   image_encoder=image_encoder)
    return report


def post_build(index: str | Path, cfg, *, corpus_root: str | Path | None, text_encoder=None, image_encoder=None
               ) -> dict:
    """BM25 + retrieval calibration + router classifier, written into the index's live version directory."""
    from ragmed.index.store import IndexStore
    from ragmed.pipeline.hybrid import BM25Channel, Calibrator, calibrate_channels

    store = IndexStore(index, use_gpu=False)
    summary: dict = {}
    bm25 = BM25Channel.build(store)
    if bm25 is not None:
        bm25.save(store.version_dir)
        summary["bm25_docs"] = len(bm25.case_ids)
    img_rec = store.encoders.get("image", {})
    same_image_encoder = image_encoder is not None and img_rec.get("id") == image_encoder.id
    cal = calibrate_channels(store, text_encoder=text_encoder,
                             image_encoder_space=img_rec.get("space"), bm25=bm25)
    Calibrator(cal).save(store.version_dir)
    summary["calibrated"] = {d: sorted(v) for d, v in cal["domains"].items()}
    if cfg.domains and corpus_root is not None and same_image_encoder:
        from ragmed.domains import fit_router

        params = cfg.router.params
        summary["router"] = fit_router(store.version_dir, corpus_root, image_encoder,
                                       domains=[d.name for d in cfg.domains],
                                       max_per_domain=int(params.get("fit_max_per_domain", 200)))
    elif cfg.domains:
        summary["router"] = {"fitted": False, "reason": "the index's image encoder differs from the pipeline's"
                             if image_encoder is not None else "no image encoder"}
    log.info("post-build: %s", summary)
    return summary
