"""ragmed: multimodal medical retrieval-augmented generation with cited evidence.

``import ragmed`` is light: it imports neither torch nor faiss. Heavy parts load on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ragmed.version import __version__

__all__ = ["Pipeline", "Answer", "load_image", "RagmedError", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from ragmed.errors import RagmedError
    from ragmed.io import load_image
    from ragmed.pipeline import Answer, Pipeline


def __getattr__(name: str):
    if name in ("Pipeline", "Answer"):
        from ragmed import pipeline

        return getattr(pipeline, name)
    if name == "load_image":
        from ragmed.io import load_image

        return load_image
    if name == "RagmedError":
        from ragmed.errors import RagmedError

        return RagmedError
    raise AttributeError(f"module 'ragmed' has no attribute {name!r}")
