"""Embedding fallback for paraphrases (``kg.link(text, fuzzy=True)``), precision first.

Targets: the preferred names (up to 4 words, one concept per distinct name) of linkable concepts, except the
classification titles of ICD-10-CM and the OMIM / Orphanet disease names (which exact matching covers), embedded
once with the MiniLM text encoder (``ragmed.encoders.create_encoder("minilm")``) and stored as float16 in the graph
directory (``ragmed kg embed DIR``) or, on first use, under ``$RAGMED_CACHE/knowledge/<graph id>/``.
Candidates in the text: runs of 2–5 content words inside a clause that exact matching left uncovered (single words
are too ambiguous to embed). A candidate links to its nearest concept when the cosine similarity is at least
``threshold`` (default 0.88) and beats the runner-up concept by ``margin``; its score is the similarity.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ragmed.knowledge.store import GENERIC_WORDS
from ragmed.knowledge.text import _PRE, _POST, _PSEUDO, _TERM, _UPRE, _UPOST, _match_at

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.88
DEFAULT_MARGIN = 0.02
MIN_WORDS, MAX_WORDS = 2, 5
EXCLUDED_SOURCES = {"ICD10CM"}
MAX_TARGET_WORDS = 4
FILE = "fuzzy-minilm.npy"
_BREAK = {"and", "or", "with", "without", "in", "on", "at", "to", "is", "are", "was", "were", "be", "been", "the",
          "a", "an", "this", "that", "there", "these", "those", "for", "from", "by", "as", "which", "than", "since",
          "compared", "seen", "noted", "identified", "demonstrated", "present", "xxxx"}


class FuzzyLinker:
    def __init__(self, kg, encoder=None, build_to: Path | None = None):
        self.kg = kg
        self._encoder = encoder
        from ragmed.knowledge.text import normalise

        cand = [i for i in kg.linkable_indices()
                if kg.source_of(i) not in EXCLUDED_SOURCES and not kg.ids[i].startswith(("OMIM:", "ORPHA:"))
                and len(normalise(kg.names[i]).split()) <= MAX_TARGET_WORDS]
        seen: set[str] = set()
        self.targets = []  # one target per distinct name: the concept the exact linker would prefer
        for i in sorted(cand, key=kg._rank_key):
            key = normalise(kg.names[i])
            if key not in seen:
                seen.add(key)
                self.targets.append(i)
        self.matrix = self._load_or_build(build_to)

    @property
    def encoder(self):
        if self._encoder is None:
            from ragmed.encoders import create_encoder

            self._encoder = create_encoder("minilm")
        return self._encoder

    def cache_path(self) -> Path:
        from ragmed.paths import cache_dir

        safe = self.kg.id.replace("/", "_").replace("@", "-")
        return cache_dir("knowledge", safe) / FILE

    def _load_or_build(self, path: Path | None = None) -> np.ndarray:
        for p in ([] if path else [self.kg.path / FILE, self.cache_path()]):
            if p.exists():
                m = np.load(p, allow_pickle=False)
                if m.shape[0] == len(self.targets):
                    return m.astype(np.float32)
        path = path or self.cache_path()
        names = [self.kg.names[i] for i in self.targets]
        log.info("embedding %d concept names for the fuzzy linker (once; cached at %s)", len(names), path)
        m = np.asarray(self.encoder.encode_texts(names), dtype=np.float32) if names else np.zeros((0, 384), np.float32)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, m.astype(np.float16), allow_pickle=False)
        tmp.replace(path)
        return m

    def candidates(self, toks, sid, covered: list[bool]) -> list[tuple[int, int]]:
        norms = [t.norm for t in toks]
        n = len(toks)
        trig = [False] * n
        for table in (_PRE, _POST, _PSEUDO, _TERM, _UPRE, _UPOST):
            for i in range(n):
                k = _match_at(norms, i, table)
                for j in range(i, i + k):
                    trig[j] = True
        runs, cur = [], []
        for i in range(n):
            ok = (not covered[i] and not trig[i] and norms[i] not in _BREAK and not norms[i].isdigit()
                  and (not cur or sid[i] == sid[cur[-1]]) and (not cur or toks[i].start - toks[cur[-1]].end <= 1))
            if ok:
                cur.append(i)
            else:
                if cur:
                    runs.append(cur)
                cur = [i] if (not covered[i] and not trig[i] and norms[i] not in _BREAK) else []
        if cur:
            runs.append(cur)
        out = []
        for r in runs:
            content = [i for i in r if norms[i] not in GENERIC_WORDS]
            if len(content) < MIN_WORDS:
                continue
            r = r[-MAX_WORDS:]
            out.append((r[0], r[-1] + 1))
        return out

    def extend(self, text, toks, sid, neg, unc, found, *, threshold: float | None = None, margin: float = DEFAULT_MARGIN):
        from ragmed.knowledge.graph import UNCERTAIN_FACTOR, LinkedConcept

        threshold = DEFAULT_THRESHOLD if threshold is None else threshold
        if not len(self.targets):
            return found
        covered = [False] * len(toks)
        for m in found:
            for k, t in enumerate(toks):
                if t.start >= m.span[0] and t.end <= m.span[1]:
                    covered[k] = True
        cands = self.candidates(toks, sid, covered)
        if not cands:
            return found
        phrases = [text[toks[a].start:toks[b - 1].end] for a, b in cands]
        q = np.asarray(self.encoder.encode_texts(phrases), dtype=np.float32)
        sims = q @ self.matrix.T
        out = list(found)
        for (a, b), row in zip(cands, sims):
            top2 = np.argpartition(-row, 1)[:2] if len(row) > 1 else np.array([0])
            top2 = top2[np.argsort(-row[top2])]
            best = float(row[top2[0]])
            second = float(row[top2[1]]) if len(top2) > 1 else -1.0
            if best < threshold or best - second < margin:
                continue
            ci = self.targets[int(top2[0])]
            kg = self.kg
            hedged = any(unc[a:b])
            out.append(LinkedConcept(id=kg.ids[ci], name=kg.names[ci], source=kg.source_of(ci), cui=kg.cuis[ci],
                                     span=(toks[a].start, toks[b - 1].end), negated=any(neg[a:b]),
                                     score=best * (UNCERTAIN_FACTOR if hedged else 1.0),
                                     text=text[toks[a].start:toks[b - 1].end], method="embedding", uncertain=hedged,
                                     types=kg.types_of(ci)))
        out.sort(key=lambda m: m.span)
        return out
