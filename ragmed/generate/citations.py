"""Citation checks shared by every generator: which refs a text cites, whether they were given, whether the cited
evidence supports each sentence, and deterministic citations for a model that forgot them.

Flags a :class:`~ragmed.types.Generation` may carry:

- ``uncited``: the answer cites nothing it was given;
- ``unknown-citation``: it cites a ref it was not given (that ref is dropped from ``citations``);
- ``unsupported``: a sentence's cited evidence does not support it (low word overlap, or, for a yes/no answer, no
  cited evidence that says the same);
- ``unsupported-terms:w1,w2``: content words of a cited sentence that its cited evidence (and the question) never
  mention (an open or report answer adding "heart" to "right upper lobe [3]");
- ``citations-attached``: the model cited nothing; ragmed attached the refs of the evidence each sentence overlaps
  most (deterministic), so the citations are ragmed's, not the model's;
- ``dropped-disagreeing-citation``: a closed answer cited a case that says the opposite; the citation was removed
  (an answer never cites a disagreeing case as support);
- ``departs-from-evidence``: a closed answer says the opposite of the majority of the retrieved cases that answer
  (a model that reads the image may rightly do so); the text says so;
- ``withheld-knowledge-only``: sentences whose names and terms occur in no retrieved case, supported only by the
  knowledge graph, were removed (knowledge is context, never the diagnosis).

Knowledge-graph text ([K…]) never counts as support for the terms of an answer: ``unsupported-terms`` checks each
sentence against the *cases* it cites, for open and closed answers alike.
"""
from __future__ import annotations

import re

from ragmed.generate.text import (content_words, jaccard, normalize_answer, novel_terms, overlap, qa_pairs,
                                  report_asserts, same_finding, split_sentences, yes_no)
from ragmed.types import Evidence, KnowledgeEvidence

REF = re.compile(r"\[(K?\d+)\]")
_ANY_REF = re.compile(r"\s*\[(?:K?\d+)\](?:\s*,?\s*\[(?:K?\d+)\])*")
_ANSWER_SENT = re.compile(r"(?<=[.!?])\s+(?!\[K?\d+\])|\n+")  # refs after the full stop stay with their sentence


def cited_refs(text: str) -> list[str]:
    seen: list[str] = []
    for m in REF.finditer(text):
        r = f"[{m.group(1)}]"
        if r not in seen:
            seen.append(r)
    return seen


def check_citations(text: str, evidence: list[Evidence], knowledge: list[KnowledgeEvidence]) -> tuple[list[str], list[str]]:
    """(citations that point at given evidence, flags). Flags: ``uncited`` when the text cites nothing it was
    given, ``unknown-citation`` when it cites a ref it was not given."""
    given = {e.ref for e in evidence} | {k.ref for k in knowledge}
    refs = cited_refs(text)
    valid = [r for r in refs if r in given]
    flags = []
    if not valid:
        flags.append("uncited")
    if len(valid) < len(refs):
        flags.append("unknown-citation")
    return valid, flags


def _sources(evidence: list[Evidence], knowledge: list[KnowledgeEvidence]) -> dict[str, str]:
    src = {e.ref: (e.text or e.excerpt) for e in evidence if e.ref}
    src.update({k.ref: f"{k.name}. {k.text}" for k in knowledge if k.ref})
    return src


def answer_sentences(text: str) -> list[str]:
    return [s.strip() for s in _ANSWER_SENT.split(text or "") if s.strip()]


def strip_unknown_refs(text: str, given: set[str]) -> str:
    """Remove refs the model invented (``[7]`` when only [1]–[3] were given)."""
    return REF.sub(lambda m: m.group(0) if f"[{m.group(1)}]" in given else "", text)


def evidence_says(question: str, text: str) -> str | None:
    """What one piece of evidence answers to a yes/no question: the answer of its most similar "Q: … A: …" pair about
    the same finding (content-word Jaccard ≥ 0.5), else the finding-scoped negation-aware presence of the finding in
    its report text."""
    best, best_sim = None, 0.0
    for q, a in qa_pairs(text):
        if not same_finding(question, q):
            continue
        sim = jaccard(question, q)
        if sim > best_sim:
            best, best_sim = normalize_answer(a), sim
    if best is not None and best_sim >= 0.5:
        return best
    return report_asserts(question, text)


def support(sentence: str, source: str) -> float:
    """How much of a sentence's content the cited text contains (share of its content words, 0–1)."""
    body = _ANY_REF.sub(" ", sentence)
    if not content_words(body):
        return 1.0  # nothing to support ("See [1].")
    return overlap(body, source)


def attach_citations(text: str, evidence: list[Evidence], knowledge: list[KnowledgeEvidence], *,
                     min_overlap: float = 0.2) -> tuple[str, bool]:
    """Cite, after each uncited sentence, the given evidence whose text overlaps it most (ties → better rank).
    Returns (text, whether anything was attached). Deterministic."""
    src = _sources(evidence, knowledge)
    order = [e.ref for e in evidence if e.ref] + [k.ref for k in knowledge if k.ref]
    out, attached = [], False
    for sent in answer_sentences(text):
        if cited_refs(sent) or not src:
            out.append(sent)
            continue
        scores = [(support(sent, src[r]), -i, r) for i, r in enumerate(order)]
        s, _, ref = max(scores)
        if s >= min_overlap and content_words(sent):
            m = re.search(r"[.!?]\s*$", sent)
            sent = (sent[: m.start()] + f" {ref}" + sent[m.start():]) if m else f"{sent} {ref}"
            attached = True
        out.append(sent)
    return " ".join(out), attached


def ground(text: str, question: str, evidence: list[Evidence], knowledge: list[KnowledgeEvidence], *,
           task: str = "open", attach: bool = True, min_support: float = 0.3) -> tuple[str, list[str], list[str]]:
    """The one check every model backend runs on its raw answer. Returns (text, citations, flags): invented refs
    removed; sentences supported only by knowledge-graph text withheld; a closed answer's citations of cases that say
    the opposite removed, and its departure from the evidence stated; citations attached when the model gave none
    (flag ``citations-attached``); ``uncited`` when nothing could be cited; ``unsupported`` when a sentence's cited
    evidence does not support it; ``unsupported-terms`` for words no cited case contains."""
    given = {e.ref for e in evidence} | {k.ref for k in knowledge}
    flags: list[str] = []
    refs = cited_refs(text)
    if any(r not in given for r in refs):
        flags.append("unknown-citation")
        text = re.sub(r"\s{2,}", " ", strip_unknown_refs(text, given)).strip()
    text, withheld = withhold_knowledge_only(text, question, evidence, knowledge)
    if withheld:
        flags.append("withheld-knowledge-only")
    if not text:
        return ("Insufficient evidence: what the model wrote rests only on knowledge-graph text, not on any retrieved "
                "case.", [], flags + ["insufficient-evidence", "uncited"])
    if task == "closed":
        text, dropped, departs = _closed_agreement(text, question, evidence)
        if dropped:
            flags.append("dropped-disagreeing-citation")
        if departs:
            flags.append("departs-from-evidence")
    if attach:  # a closed answer with no citation; every uncited sentence of a longer answer
        if task == "closed":
            text, done = _attach_closed(text, question, evidence) if not cited_refs(text) else (text, False)
        else:
            text, done = attach_citations(text, evidence, knowledge)
        if done:
            flags.append("citations-attached")
            # a sentence the model left uncited may just have been given knowledge refs only: the same rule applies
            text, withheld = withhold_knowledge_only(text, question, evidence, knowledge)
            if withheld and "withheld-knowledge-only" not in flags:
                flags.append("withheld-knowledge-only")
            if not text:
                return ("Insufficient evidence: what the model wrote rests only on knowledge-graph text, not on any "
                        "retrieved case.", [], flags + ["insufficient-evidence", "uncited"])
    citations, cflags = check_citations(text, evidence, knowledge)
    flags += [f for f in cflags if f not in flags]
    if citations and not supported(text, question, evidence, knowledge, task=task, min_support=min_support):
        flags.append("unsupported")
    novel = unsupported_terms(_answer_body(text, question) if task == "closed" else text, question, evidence,
                              knowledge)
    if citations and novel:
        flags.append("unsupported-terms:" + ",".join(novel[:8]))
    return text, citations, flags


def _answer_body(text: str, question: str) -> str:
    """A closed answer without its yes/no word (the rest is what the terms check reads)."""
    return re.sub(r"^\s*(yes|no)\b[,.;:]?", "", text, flags=re.I)


def withhold_knowledge_only(text: str, question: str, evidence: list[Evidence],
                            knowledge: list[KnowledgeEvidence]) -> tuple[str, bool]:
    """Remove the sentences that cite knowledge-graph refs only and whose content words occur in no retrieved case
    (nor the question): "Hemorrhagic fever-renal syndrome (ORPHA:340) [K1]" when no case mentions it; and those that
    say nothing beyond generic words ("The term.. [K1]"). Knowledge is context, never the diagnosis. Returns (text,
    whether anything was removed)."""
    if not knowledge:
        return text, False
    cases = [e.text or e.excerpt for e in evidence]
    kept, removed = [], False
    for sent in answer_sentences(text):
        refs = cited_refs(sent)
        if refs and all(r.startswith("[K") for r in refs):
            body = _ANY_REF.sub(" ", sent)
            # terms no case contains, or no claim at all ("The term.. [K1]": generic words only)
            if novel_terms(body, cases, question) or not novel_terms(body, []):
                removed = True
                continue
        kept.append(sent)
    return " ".join(kept), removed


def _closed_agreement(text: str, question: str, evidence: list[Evidence]) -> tuple[str, bool, bool]:
    """For a yes/no answer: remove its citations of cases that say the opposite, and when it goes against the
    majority of the cases that answer, say so. Returns (text, dropped any, departs)."""
    ans = yes_no(text)
    if ans is None:
        return text, False, False
    by_ref = {e.ref: evidence_says(question, e.text or e.excerpt) for e in evidence if e.ref}
    opposite = {r for r, said in by_ref.items() if said is not None and said != ans}
    dropped = False
    for r in cited_refs(text):
        if r in opposite:
            text = text.replace(r, "")
            dropped = True
    text = re.sub(r"\s{2,}", " ", re.sub(r"\s+([.,;:])", r"\1", text)).strip()
    agree = sum(1 for said in by_ref.values() if said == ans)
    departs = len(opposite) > agree
    if departs:
        text = (text.rstrip() + f" This departs from the retrieved evidence: {len(opposite)} of "
                f"{len(opposite) + agree} cases that answer say \"{'no' if ans == 'yes' else 'yes'}\".")
    return text, dropped, departs


def unsupported_terms(text: str, question: str, evidence: list[Evidence], knowledge: list[KnowledgeEvidence]) -> list[str]:
    """Content words of cited sentences that none of the sentence's cited *cases* (nor the question) contains:
    "right upper lobe of the heart [3]" when [3] says "right upper lobe" → ["heart"]. Knowledge-graph text is not
    support: a sentence citing only [K…] refs is checked against no case, so each of its terms counts."""
    src = {e.ref: (e.text or e.excerpt) for e in evidence if e.ref}
    out: list[str] = []
    for sent in answer_sentences(text):
        refs = cited_refs(sent)
        if refs:
            body = _ANY_REF.sub(" ", sent)
            out += [w for w in novel_terms(body, [src[r] for r in refs if r in src], question) if w not in out]
    return out


def _attach_closed(text: str, question: str, evidence: list[Evidence]) -> tuple[str, bool]:
    """A yes/no answer cites the evidence that gives the same answer."""
    ans = yes_no(text)
    if ans is None:
        return attach_citations(text, evidence, [])
    refs = [e.ref for e in evidence if e.ref and evidence_says(question, e.text or e.excerpt) == ans]
    if not refs:
        return text, False
    first, rest = (text.split(None, 1) + [""])[:2]
    first = first.rstrip(".,;:")
    return f"{first} {''.join(refs)}. {rest}".strip(), True


def supported(text: str, question: str, evidence: list[Evidence], knowledge: list[KnowledgeEvidence], *,
              task: str = "open", min_support: float = 0.3) -> bool:
    """True when every cited sentence is supported by at least one evidence item it cites."""
    src = _sources(evidence, knowledge)
    if task == "closed":
        ans = yes_no(text)
        if ans is not None:
            refs = [r for r in cited_refs(text) if r in src]
            said = {evidence_says(question, src[r]) for r in refs if not r.startswith("[K")}
            return ans in said
    for sent in answer_sentences(text):
        refs = [r for r in cited_refs(sent) if r in src]
        if refs and max(support(sent, src[r]) for r in refs) < min_support:
            return False
    return True


def compact_evidence(question: str, e: Evidence, max_chars: int = 240, max_items: int = 2) -> str:
    """The part of an evidence text worth showing a small model: the Q–A pairs or sentences that overlap the
    question most (in their original order), cut to ``max_chars``."""
    sents = split_sentences(e.text or e.excerpt)
    if not sents:
        return ""
    ranked = sorted(range(len(sents)), key=lambda i: (-overlap(question, sents[i]), i))[:max_items]
    out = " ".join(sents[i] for i in sorted(ranked))
    return out if len(out) <= max_chars else out[: max_chars - 1].rsplit(" ", 1)[0] + "…"
