"""The extractive answerer: no model. It picks the evidence sentences most relevant to the question and quotes
them, each with its citation. For question–answer evidence ("Q: … A: …", the form VQA corpora are indexed in) it
answers with the answer of the most similar indexed question. A closed (yes/no, either/or) question is answered by
the vote over the cases (:class:`ragmed.generate.vote.VoteGenerator`), so that the answer cites only the cases that
agree with it. A knowledge-graph definition is added only as labelled background, and only when the concept is named
in the quoted case evidence (knowledge is context, never the diagnosis)."""
from __future__ import annotations

import re

import numpy as np

from ragmed.generate.citations import check_citations
from ragmed.generate.text import novel_terms
from ragmed.types import Evidence, Generation, KnowledgeEvidence

_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9Q])")
_QA = re.compile(r"Q:\s*(?P<q>.+?)\s*A:\s*(?P<a>.+?)\.?\s*$", re.S)
_WORD = re.compile(r"[a-z0-9]+")
STOP = frozenset("a an the is are was were be of in on at to and or with for this that there any what which how "
                 "does do did can could image images shown show seen see patient".split())


def split_sentences(text: str) -> list[str]:
    if "Q:" in text and "A:" in text:
        parts = re.split(r"(?=\bQ:\s)", text)
        return [p.strip() for p in parts if p.strip()]
    return [s.strip() for s in _SENT.split(text) if len(s.strip()) > 2]


class ExtractiveGenerator:
    id = "extractive"

    def __init__(self, max_sentences: int = 3, text_encoder=None, min_relevance: float = 0.0):
        self.max_sentences = int(max_sentences)
        self.text_encoder = text_encoder
        self.min_relevance = float(min_relevance)

    def warm_up(self) -> None:
        pass

    def _relevance(self, question: str, sentences: list[str]) -> np.ndarray:
        q = set(_WORD.findall(question.lower())) - STOP
        lex = np.array([len(q & set(_WORD.findall(s.lower()))) / (len(q) or 1) for s in sentences], dtype=np.float32)
        if self.text_encoder is None:
            return lex
        texts = [_QA.match(s).group("q") if _QA.match(s) else s for s in sentences]
        v = self.text_encoder.encode_texts([question] + texts)
        return 0.8 * (v[1:] @ v[0]) + 0.2 * lex

    def generate(self, question: str, evidence: list[Evidence], knowledge: list[KnowledgeEvidence], *,
                 image=None, domain: str | None = None, task: str = "open") -> Generation:
        if task == "closed":
            from ragmed.generate.vote import VoteGenerator

            g = VoteGenerator(text_encoder=self.text_encoder).generate(question, evidence, knowledge, task="closed")
            g.model = f"{self.id} (closed: vote)"
            return g
        cands: list[tuple[str, Evidence, float]] = []
        for rank, e in enumerate(evidence):
            for s in split_sentences(e.text or e.excerpt):
                cands.append((s, e, rank))
        if not cands:
            return Generation(text="The retrieved evidence contains no text to answer from.", citations=[],
                              model=self.id, flags=["insufficient-evidence"], insufficient=True)
        rel = self._relevance(question, [c[0] for c in cands])
        # prefer relevant sentences from better-ranked evidence
        score = rel + np.array([0.02 * (len(evidence) - c[2]) / max(1, len(evidence)) for c in cands])
        order = np.argsort(-score)
        chosen, seen = [], set()
        for i in order:
            s, e, _ = cands[i]
            key = s.lower()
            if key in seen or rel[i] < self.min_relevance:
                continue
            seen.add(key)
            chosen.append((s, e))
            if len(chosen) >= self.max_sentences:
                break
        if not chosen:
            return Generation(text="None of the retrieved evidence addresses the question.", citations=[],
                              model=self.id, flags=["insufficient-evidence"], insufficient=True)
        lines = []
        first_qa = _QA.match(chosen[0][0])
        if first_qa:
            lines.append(f"{first_qa.group('a').strip().rstrip('.')} {chosen[0][1].ref} — the answer given for the "
                         f"most similar indexed question (\"{first_qa.group('q').strip()}\").")
            rest = chosen[1:]
        else:
            rest = chosen
        for s, e in rest:
            m = _QA.match(s)
            lines.append(f"{m.group('q').strip()} → {m.group('a').strip()} {e.ref}" if m else f"{s} {e.ref}")
        quoted = [e.text or e.excerpt for _, e in chosen]
        for k in knowledge[:1]:
            if k.text and k.name and not novel_terms(k.name, quoted):
                lines.append(f"Background (knowledge graph, context only): {k.name}: "
                             f"{k.text.split('. ')[0].rstrip('.')}. {k.ref}")
        text = "\n".join(lines)
        citations, flags = check_citations(text, evidence, knowledge)
        return Generation(text=text, citations=citations, model=self.id, flags=flags)
