"""Where ragmed keeps caches: ``$RAGMED_CACHE``, else ``~/.cache/ragmed``."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("RAGMED_CACHE") or Path.home() / ".cache" / "ragmed")
    p = root.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p
