"""BM25 over the indexed cases' report text (bm25s, English stop words), one more way to search an index.

Built once per index version into ``<version>/bm25/`` (bm25s' own NumPy/JSON format, no pickles) plus ``docs.json``
(case id and domain per document). An index built without it gets one built in memory on first use.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from ragmed.index.records import Hit


def _tokenize(texts: list[str]):
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", show_progress=False, return_ids=False)


class BM25Channel:
    """BM25 over the indexed cases' report text; ``search(question, k, domains)`` -> hits best first."""

    def __init__(self, retriever, case_ids: list[str], domains: list[str]):
        self.retriever, self.case_ids, self.domains = retriever, list(case_ids), np.asarray(domains)
        self._lock = threading.Lock()

    @classmethod
    def build(cls, store) -> "BM25Channel | None":
        import bm25s

        ids, texts, doms = [], [], []
        for cid, text, dom in store.texts():
            ids.append(cid)
            texts.append(text)
            doms.append(dom)
        if not ids:
            return None
        retriever = bm25s.BM25()
        retriever.index(_tokenize(texts), show_progress=False)
        return cls(retriever, ids, doms)

    def save(self, version_dir: str | Path) -> None:
        d = Path(version_dir) / "bm25"
        tmp = Path(version_dir) / ".bm25.tmp"
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        self.retriever.save(str(tmp), show_progress=False)
        (tmp / "docs.json").write_text(json.dumps({"case_ids": self.case_ids, "domains": self.domains.tolist()}))
        shutil.rmtree(d, ignore_errors=True)
        os.replace(tmp, d)

    @classmethod
    def load(cls, version_dir: str | Path) -> "BM25Channel | None":
        import bm25s

        d = Path(version_dir) / "bm25"
        if not (d / "docs.json").exists():
            return None
        docs = json.loads((d / "docs.json").read_text())
        retriever = bm25s.BM25.load(str(d), allow_pickle=False, show_progress=False)
        return cls(retriever, docs["case_ids"], docs["domains"])

    def search(self, query: str, k: int, *, domains: list[str] | None = None, exclude_row: int | None = None
               ) -> list[Hit]:
        toks = _tokenize([query])
        if not toks or not toks[0]:
            return []
        mask = None
        if domains is not None:
            mask = np.isin(self.domains, domains).astype(np.float32)
        if exclude_row is not None:
            mask = np.ones(len(self.case_ids), dtype=np.float32) if mask is None else mask
            mask[exclude_row] = 0.0
        n = len(self.case_ids) if mask is None else int(mask.sum())
        if n == 0:
            return []
        with self._lock:
            docs, scores = self.retriever.retrieve(toks, k=min(k, n), show_progress=False, weight_mask=mask)
        out = []
        for j, s in zip(docs[0], scores[0]):
            if s > 0:
                out.append(Hit(self.case_ids[int(j)], float(s), "bm25", str(self.domains[int(j)])))
        return out
