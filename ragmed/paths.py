"""Where ragmed keeps caches: ``$RAGMED_CACHE``, else ``~/.cache/ragmed``."""
from __future__ import annotations

from pathlib import Path


def cache_dir(*parts: str) -> Path:
    from ragmed.settings import settings

    root = settings().cache_root
    p = root.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p
