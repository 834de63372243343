"""Embedding fallback for paraphrases (``kg.link(text, fuzzy=True)``), precision first.

Targets: the preferred names (up to 4 words, one concept per distinct name) of linkable concepts, except the
classification titles of ICD-10-CM and the OMIM / Orphanet disease names (which exact matching covers), embedded
once with the MiniLM text encoder (``ragmed.encoders.create_encoder("minilm")``) and stored as float16 in the graph
directory (``ragmed kg embed DIR``) or, on first use, under ``$RAGMED_CACHE/knowledge/<graph id>/``.
Candidates in the text: runs of 2–5 content words inside a clause that exact matching left uncovered, with
generic modifiers ("large", "mild" …) trimmed from their ends (single words are too ambiguous to embed). A candidate links to its nearest concept when the cosine similarity is at least
``threshold`` (default 0.88) and beats the runner-up concept by ``margin``; its score is the similarity.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ragmed.knowledge.mention import UNCERTAIN_FACTOR, LinkedConcept
from ragmed.knowledge.store import GENERIC_WORDS
from ragmed.knowledge.text import _PRE, _POST, _PSEUDO, _TERM, _UPRE, _UPOST, _match_at

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.88
DEFAULT_MARGIN = 0.02
MIN_WORDS, MAX_WORDS = 2, 5
EXCLUDED_SOURCES = {"ICD10CM"}
MAX_TARGET_WORDS = 4
FILE = "fuzzy-minilm.npy"
_SOFT = {"of", "the", "a", "an"}  # allowed inside a candidate ("fracture of a rib"), trimmed at its ends
_BREAK = {"and", "or", "with", "without", "in", "on", "at", "to", "is", "are", "was", "were", "be", "been",
          "this", "that", "there", "these", "those", "for", "from", "by", "as", "which", "than", "since",
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
        import hashlib
        import json

        names = [self.kg.names[i] for i in self.targets]
        digest = hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()
        for p in ([] if path else [self.kg.path / FILE, self.cache_path()]):
            meta = p.with_suffix(".json")
            if p.exists() and meta.exists():
                try:
                    ok = json.loads(meta.read_text()).get("names_sha256") == digest
                except ValueError:
                    ok = False
                if ok:
                    return np.load(p, allow_pickle=False).astype(np.float32)
        path = path or self.cache_path()
        log.info("embedding %d concept names for the fuzzy linker (once; cached at %s)", len(names), path)
        m = np.asarray(self.encoder.encode_texts(names), dtype=np.float32) if names else np.zeros((0, 384), np.float32)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, m.astype(np.float16), allow_pickle=False)
        tmp.replace(path)
        path.with_suffix(".json").write_text(json.dumps({"names_sha256": digest, "targets": len(names),
                                                         "encoder": getattr(self.encoder, "id", "minilm")}))
        return m

    def candidates(self, toks, sid, covered: list[bool]) -> list[tuple[int, int]]:
        """Runs of adjacent words (one space apart, same clause) that exact matching left uncovered and that hold no
        trigger or break word; generic words and articles trimmed from both ends; 2-5 content words."""
        norms = [t.norm for t in toks]
        n = len(toks)
        blocked = [covered[i] or norms[i] in _BREAK or norms[i].isdigit() for i in range(n)]
        for table in (_PRE, _POST, _PSEUDO, _TERM, _UPRE, _UPOST):
            for i in range(n):
                for j in range(i, i + _match_at(norms, i, table)):
                    blocked[j] = True
        runs: list[list[int]] = []
        for i in range(n):
            if blocked[i]:
                continue
            if runs and runs[-1][-1] == i - 1 and sid[i] == sid[i - 1] and toks[i].start - toks[i - 1].end <= 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        weak = GENERIC_WORDS | _SOFT
        out = []
        for r in runs:
            while r and norms[r[0]] in weak:
                r = r[1:]
            while r and norms[r[-1]] in weak:
                r = r[:-1]
            content = [i for i in r if norms[i] not in weak]
            if MIN_WORDS <= len(content) <= MAX_WORDS:
                out.append((r[0], r[-1] + 1))
        return out

    def extend(self, text, toks, sid, neg, unc, found, *, threshold: float | None = None, margin: float = DEFAULT_MARGIN):

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
