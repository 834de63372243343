"""``ragmed-answerer``: ragmed's small image + question answer classifier (:mod:`.model`) and its generator backend
(:mod:`.backend`), trained by eval/train_answerer.py, weights in ``weights/ragmed-answerer``."""
from ragmed.generate.answerer.backend import AnswererGenerator, shipped_path

__all__ = ["AnswererGenerator", "shipped_path"]
