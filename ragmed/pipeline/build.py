"""Index building from a pipeline config (the router, when configured, assigns each case its domain)."""
from __future__ import annotations

from pathlib import Path


def build_from_config(corpus, out: str | Path, cfg, *, add: bool = False, progress: bool = True, **kw):
    from ragmed.index import build_index

    router = None
    if cfg.domains:
        from ragmed.domains import build_router

        router = build_router(cfg).route_case
    return build_index(corpus, out, cfg, router=router, add=add, progress=progress, **kw)
