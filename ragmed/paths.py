"""Where ragmed keeps caches: ``$RAGMED_CACHE``, else ``~/.cache/ragmed``."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    from ragmed.settings import settings

    root = settings().cache_root
    p = root.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


@contextlib.contextmanager
def publish_dir(out: Path, marker: str = "config.json") -> Iterator[Path]:
    """Write a directory atomically: yields a temporary directory beside ``out``; when the block ends without error
    it is renamed to ``out``. If another process published ``out`` first (its ``marker`` file exists), that copy
    is kept; the temporary directory is always removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        yield tmp
        try:
            os.replace(tmp, out)
        except OSError:  # another process published it first
            if not (out / marker).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
