"""The loaded concept graph: concept records, typed relations, and the concept linker.

``KnowledgeGraph`` keeps the nodes column-wise and the edges as numpy arrays (compressed sparse rows per direction),
so that a graph of ~200k concepts loads in well under a second; ``kg.graph`` builds the equivalent
``networkx.MultiDiGraph`` on first use.

Linking (``kg.link(text)``): tokens are normalised (``text.py``) and matched against the precomputed lexicon of
concept names and synonyms, leftmost-longest, within a sentence; capitalised abbreviations match case-sensitively.
Every match is then checked for negation (NegEx-style scope). A span that several concepts share (the same name in
DOID, HPO and MeSH) is reported once, as the concept that is matched by its preferred name, has a UMLS CUI, and comes
first in ``SOURCE_PRIORITY``; when that concept has no CUI of its own, the CUI that the other concepts of the span
agree on is reported. Optionally (``fuzzy=True``) phrases left unmatched are compared with concept names by MiniLM
embeddings (``embed.py``), with a high similarity threshold (precision first).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ragmed.knowledge.mention import (SCORE_ABBREVIATION, SCORE_PREFERRED, SCORE_SYNONYM, UNCERTAIN_FACTOR,
                                      LinkedConcept)
from ragmed.knowledge.text import negated_tokens, sentence_ids, tokenize, uncertain_tokens

__all__ = ["KnowledgeGraph", "LinkedConcept", "SOURCE_PRIORITY", "UNCERTAIN_FACTOR"]

SOURCE_PRIORITY = ("UMLS", "DOID", "HPO", "SYMP", "RAD", "UBERON", "MSH", "ICD10CM")
# a word joined by a hyphen (or "non" written apart) in front of a match makes a longer term that means something
# else: "non-ossifying fibroma" is not "ossifying fibroma", "pseudo-obstruction" is not "obstruction"
_PREFIX_WORDS = frozenset({"non", "pseudo", "anti", "un", "in", "de", "post", "pre", "peri", "para", "sub", "supra",
                           "infra", "extra", "intra", "inter", "hypo", "hyper"})


class KnowledgeGraph:
    """A loaded knowledge directory. Use :func:`ragmed.knowledge.load_graph`."""

    def __init__(self, path: Path, manifest: dict, cols: dict, edges: dict, lexicon: dict):
        self.path = Path(path)
        self.manifest = manifest
        self.id: str = manifest["id"]
        self.ids: list[str] = cols["ids"]
        self.names: list[str] = cols["names"]
        self._source_names: list[str] = cols["sources"]
        self._source: list[int] = cols["source"]
        self._type_names: list[str] = cols["type_names"]
        self._types_flat: list[int] = cols["types_flat"]
        self._types_off: list[int] = cols["types_off"]
        self.cuis: list[str | None] = cols["cuis"]
        self.index: dict[str, int] = {**cols.get("aliases", {}), **dict(zip(self.ids, range(len(self.ids))))}
        self.relations: list[str] = manifest["relations"]
        src, dst, rel = edges["src"], edges["dst"], edges["rel"]
        self._out = self._csr(src, dst, rel)
        self._in = self._csr(dst, src, rel)
        self._lex_rows: dict[str, int] = lexicon["rows"]
        self._post: list[int] = lexicon["post"]
        self._post_off: list[int] = lexicon["off"]
        self._maxlen: dict[str, int] = lexicon["maxlen"]
        self._prio = {s: i for i, s in enumerate(SOURCE_PRIORITY)}
        self._db = None
        self._db_lock = threading.Lock()
        self._nx = None
        self._fuzzy = None
        self._lock = threading.Lock()

    def _csr(self, a: np.ndarray, b: np.ndarray, rel: np.ndarray):
        n = len(self.ids)
        ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(a, minlength=n), out=ptr[1:])
        if len(a) < 2 or bool(np.all(a[1:] >= a[:-1])):  # saved sorted by source: no sort needed
            return ptr, b, rel
        order = np.argsort(a, kind="stable")
        return ptr, b[order], rel[order]

    # --- concepts ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, cid: str) -> bool:
        return cid in self.index

    @property
    def number_of_edges(self) -> int:
        return int(len(self._out[1]))

    def source_of(self, i: int) -> str:
        return self._source_names[self._source[i]]

    def types_of(self, i: int) -> list[str]:
        return [self._type_names[t] for t in self._types_flat[self._types_off[i]:self._types_off[i + 1]]]

    def _postings(self, key: str) -> list[int] | None:
        """Lexicon postings of a normalised surface form (``node_index * 4 + flags``), or None."""
        k = self._lex_rows.get(key)
        return None if k is None else self._post[self._post_off[k]:self._post_off[k + 1]]

    def details(self, i: int) -> tuple[list[str], str, dict[str, list[str]]]:
        """(synonyms, definition, xrefs) of node index i, read from ``details.sqlite``."""
        import json
        import sqlite3

        with self._db_lock:
            try:
                row = self._conn().execute("SELECT synonyms, definition, xrefs FROM details WHERE i = ?",
                                           (i,)).fetchone()
            except sqlite3.DatabaseError as e:
                from ragmed.errors import KnowledgeError

                raise KnowledgeError(f"corrupt details.sqlite: {e}", path=str(self.path),
                                     remedy="rebuild it with ragmed kg build") from e
        if row is None:
            return [], "", {}
        return json.loads(row[0]), row[1], json.loads(row[2])

    def _conn(self):
        import sqlite3

        if self._db is None:
            uri = (self.path / "details.sqlite").resolve().as_uri() + "?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return self._db

    def synonyms_of(self, i: int) -> list[str]:
        return self.details(i)[0]

    def concept(self, cid: str) -> dict[str, Any]:
        """The node record (common schema) of a concept id; KeyError when absent."""
        i = self.index[cid]
        syn, definition, xrefs = self.details(i)
        return {"id": self.ids[i], "name": self.names[i], "source": self.source_of(i), "synonyms": syn,
                "definition": definition, "types": self.types_of(i), "xrefs": xrefs, "cui": self.cuis[i]}

    def neighbours(self, cid: str, rel: str | Iterable[str] | None = None, direction: str = "out") -> list[tuple[str, str]]:
        """(relation, concept id) pairs: ``out`` edges (e.g. ``is_a`` → parents) or ``in`` edges (children)."""
        i = self.index[cid]
        ptr, other, rels = self._out if direction == "out" else self._in
        want = None if rel is None else ({rel} if isinstance(rel, str) else set(rel))
        out = []
        for j in range(ptr[i], ptr[i + 1]):
            r = self.relations[rels[j]]
            if want is None or r in want:
                out.append((r, self.ids[other[j]]))
        return out

    def parents(self, cid: str) -> list[str]:
        return [c for _, c in self.neighbours(cid, "is_a")]

    def lookup(self, term: str, limit: int = 10) -> list[dict[str, Any]]:
        """Concepts for a term: a concept id, else exact normalised name/synonym matches (any source, linkable or
        not), else names containing every word of the term (shortest first)."""
        from ragmed.knowledge.text import normalise

        term = term.strip()
        if term in self.index:
            return [self.concept(term)]
        key = normalise(term)
        hits = [i for i, n in enumerate(self.names) if normalise(n) == key] if key else []
        if not hits and key:
            hits = [p // 4 for p in self._postings(key) or []]
        if not hits and key:
            words = key.split()
            scored = []
            for i, n in enumerate(self.names):
                nn = normalise(n)
                if all(w in nn.split() for w in words):
                    scored.append((len(nn), i))
            hits = [i for _, i in sorted(scored)]
        hits = sorted(dict.fromkeys(hits), key=self._rank_key)
        return [self.concept(self.ids[i]) for i in hits[:limit]]

    # --- networkx view -----------------------------------------------------------------------------------------
    @property
    def graph(self):
        """The graph as a ``networkx.MultiDiGraph`` (built on first access)."""
        if self._nx is None:
            import networkx as nx

            import json

            G = nx.MultiDiGraph(id=self.id, sources=self.manifest.get("sources", []))
            with self._db_lock:
                rows = self._conn().execute("SELECT i, synonyms, definition, xrefs FROM details ORDER BY i").fetchall()
            G.add_nodes_from((self.ids[i], {
                "id": self.ids[i], "name": self.names[i], "source": self.source_of(i), "synonyms": json.loads(syn),
                "definition": d, "types": self.types_of(i), "xrefs": json.loads(x), "cui": self.cuis[i]})
                for i, syn, d, x in rows)
            ptr, other, rels = self._out
            src = np.repeat(np.arange(len(self.ids)), np.diff(ptr)).tolist()
            ids, names = self.ids, self.relations
            G.add_edges_from((ids[u], ids[v], {"rel": names[r]}) for u, v, r in zip(src, other.tolist(), rels.tolist()))
            self._nx = G
        return self._nx

    # --- linking -----------------------------------------------------------------------------------------------
    def _rank_key(self, i: int, preferred: bool = True):
        return (not preferred, self.cuis[i] is None, self._prio.get(self.source_of(i), len(self._prio)), self.ids[i])

    def _choose(self, postings: list[int], context: set[int] | None = None) -> tuple[int, int, list[int], str]:
        """(concept index, flags, other concept indices, reason) for the postings of one matched span."""
        best = min(postings, key=lambda p: self._rank_key(p // 4, bool(p & 1)))
        cands = list(dict.fromkeys(p // 4 for p in postings))
        if len(cands) == 1:
            return best // 4, best & 3, [], "only candidate"
        if context:
            rel = {c: sum(1 for _, o in self.neighbours(self.ids[c]) + self.neighbours(self.ids[c], direction="in")
                          if self.index.get(o) in context) for c in cands}
            top = max(rel.values())
            winners = [c for c in cands if rel[c] == top]
            if top > 0 and len(winners) == 1:
                c = winners[0]
                flags = next(p & 3 for p in postings if p // 4 == c)
                return c, flags, [o for o in cands if o != c], "context: related to another concept of the text"
        ci = best // 4
        runner = min((p for p in postings if p // 4 != ci), key=lambda p: self._rank_key(p // 4, bool(p & 1)))
        a, b = self._rank_key(ci, bool(best & 1)), self._rank_key(runner // 4, bool(runner & 1))
        why = ("matched by its preferred name" if a[0] != b[0] else "has a UMLS CUI" if a[1] != b[1]
               else f"source priority {self.source_of(ci)} over {self.source_of(runner // 4)}" if a[2] != b[2]
               else "first by id")
        return ci, best & 3, [o for o in cands if o != ci], why

    def link(self, text: str, *, negation: bool = True, fuzzy: bool = False,
             fuzzy_threshold: float | None = None, types: Iterable[str] | None = None) -> list[LinkedConcept]:
        """Concept mentions in ``text``, in text order (one per span). ``types`` keeps only concepts with one of
        these semantic types (e.g. ``schema.FINDING_TYPES``)."""
        if not text or not text.strip():
            return []
        toks = tokenize(text)
        n = len(toks)
        norms = [t.norm for t in toks]
        sid = sentence_ids(text, toks)
        found: list[tuple[int, int, list[int], str]] = []  # (i, j, postings, key)
        i = 0
        lex, maxlen = self._postings, self._maxlen
        while i < n:
            hit = None
            m = maxlen.get(norms[i], 0)
            for L in range(min(m, n - i), 0, -1):
                if sid[i + L - 1] != sid[i]:
                    continue
                key = norms[i] if L == 1 else " ".join(norms[i:i + L])
                post = lex(key)
                if post:
                    hit = (i, i + L, post, key)
                    break
            if hit is None:
                post = lex("=" + toks[i].text)
                if post:
                    hit = (i, i + 1, post, "=" + toks[i].text)
            if hit and i > 0 and norms[i - 1] in _PREFIX_WORDS and sid[i - 1] == sid[i]:
                gap = text[toks[i - 1].end:toks[i].start]
                if gap == "-" or (norms[i - 1] == "non" and not gap.strip()):
                    hit = None  # inside a longer term ("non-ossifying fibroma"): not this concept
            if hit:
                found.append(hit)
                i = hit[1]
            else:
                i += 1
        spans = [(a, b) for a, b, _, _ in found]
        check = negation and (found or fuzzy)
        neg = negated_tokens(text, toks, spans) if check else [False] * n
        unc = uncertain_tokens(text, toks, spans) if check else [False] * n
        context = {p[0] // 4 for _, _, p, _ in found if len({q // 4 for q in p}) == 1}
        want = None if types is None else set(types)
        out: list[LinkedConcept] = []
        for a, b, post, key in found:
            ci, flags, others, why = self._choose(post, context)
            if want is not None and not want.intersection(self.types_of(ci)):
                continue
            method = "abbreviation" if flags & 2 else ("exact" if flags & 1 else "synonym")
            score = {"abbreviation": SCORE_ABBREVIATION, "exact": SCORE_PREFERRED, "synonym": SCORE_SYNONYM}[method]
            cui = self.cuis[ci]
            if cui is None:
                alt = {self.cuis[o] for o in others if self.cuis[o]}
                cui = alt.pop() if len(alt) == 1 else None
            start, end = toks[a].start, toks[b - 1].end
            hedged = any(unc[a:b])
            out.append(LinkedConcept(id=self.ids[ci], name=self.names[ci], source=self.source_of(ci), cui=cui,
                                     span=(start, end), negated=any(neg[a:b]),
                                     score=score * (UNCERTAIN_FACTOR if hedged else 1.0), text=text[start:end],
                                     method=method, uncertain=hedged, types=self.types_of(ci),
                                     alternatives=[self.ids[o] for o in others], reason=why))
        if fuzzy:
            out = self._fuzzy_linker().extend(text, toks, sid, neg, unc, out, threshold=fuzzy_threshold)
            if want is not None:
                out = [m for m in out if want.intersection(m.types)]
        return out

    def link_many(self, texts: list[str], **kw) -> list[list[LinkedConcept]]:
        return [self.link(t, **kw) for t in texts]

    def _fuzzy_linker(self):
        if self._fuzzy is None:
            with self._lock:
                if self._fuzzy is None:
                    from ragmed.knowledge.embed import FuzzyLinker

                    self._fuzzy = FuzzyLinker(self)
        return self._fuzzy

    def linkable_indices(self) -> list[int]:
        """Node indices that the lexicon links (their types are among the manifest's link types)."""
        return sorted({p // 4 for p in self._post})

    def info(self) -> dict[str, Any]:
        m = self.manifest
        return {"id": self.id, "path": str(self.path), "nodes": len(self), "edges": self.number_of_edges,
                "counts": m.get("counts", {}), "sources": m.get("sources", []), "relations": self.relations,
                "link_types": m.get("link_types", []), "created": m.get("created"), "command": m.get("command")}
