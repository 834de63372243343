"""Small text helpers the generators share: content words, sentences, "Q: … A: …" pairs, answer normalisation and a
NegEx-style check of whether a report asserts or denies a finding. Pure functions, no model."""
from __future__ import annotations

import re

from ragmed.text.normalize import NO, YES, answer_key  # noqa: F401 - YES / NO re-exported (old import path)

WORD = re.compile(r"[a-z0-9]+")
_SENT = re.compile(r"(?<=[.!?;])\s+|\n+")
_QA = re.compile(r"Q:\s*(?P<q>.+?)\s*A:\s*(?P<a>.+?)\s*(?=(?:\bQ:\s)|$)", re.S)
STOP = frozenset(
    "a an the is are was were be been being of in on at to and or with for this that these those there any what which "
    "how does do did can could image images shown show shows seen see patient it its as by from into than then there's "
    "has have had will would should may might one two visible present evidence noted here we you".split())
# words an answer may use without evidence for them (phrasing, not content)
GENERIC = frozenset(
    "located location locat seen shown found appear appears appearing likely consistent suggest suggests "
    "suggesting suggestive case cases similar report reports finding findings result results based according "
    "given number numbered answer question also both each other mild small large new well within side area region "
    "normal abnormal abnormality seen identified demonstrated demonstrate".split())
# NegEx-style triggers (Chapman et al. 2001): a finding after a pre-trigger, or before a post-trigger, in the same
# clause is denied.
PRE_NEG = ("no evidence of", "no signs of", "no sign of", "negative for", "free of", "absence of", "without", "no",
           "not", "nor", "resolved", "resolution of", "clear of", "rule out", "ruled out", "removed")
POST_NEG = ("is absent", "are absent", "not seen", "not identified", "not present", "has resolved", "have resolved",
            "is not", "are not", "were not", "was not", "unlikely", "resolved")
# a negation's scope ends at a termination term or clause break, and reaches at most NEG_WINDOW words (NegEx)
_CLAUSE = re.compile(r"\b(?:but|however|although|though|except|which|with the exception of)\b|[;:]")
NEG_WINDOW = 8


def words(text: str) -> list[str]:
    return WORD.findall((text or "").lower())


def stem(w: str) -> str:
    """A crude, deterministic stemmer (plural and common suffixes) good enough for overlap scores."""
    for suf in ("ements", "ement", "ations", "ation", "ness", "ities", "ity", "ings", "ing", "ies", "ed", "es", "s"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            return w[: -len(suf)]
    return w


def content_words(text: str) -> set[str]:
    return {stem(w) for w in words(text) if w not in STOP and len(w) > 1}


def split_sentences(text: str) -> list[str]:
    """Sentences of free text, or the "Q: … A: …" pairs of VQA-form text, each one item."""
    if "Q:" in text and "A:" in text:
        pairs = qa_pairs(text)
        if pairs:
            return [f"Q: {q} A: {a}." for q, a in pairs]
    return [s.strip() for s in _SENT.split(text or "") if len(s.strip()) > 2]


def qa_pairs(text: str) -> list[tuple[str, str]]:
    """``"Q: Is there X? A: no. Q: … A: …"`` → [("Is there X?", "no"), …]."""
    out = []
    for m in _QA.finditer(text or ""):
        q, a = m.group("q").strip(), m.group("a").strip().rstrip(".").strip()
        if q and a:
            out.append((q, a))
    return out


normalize_answer = answer_key  # the generators' matching key (ragmed.text.normalize explains the two normalisers)


def yes_no(text: str) -> str | None:
    """"yes" / "no" when a text starts with (or is) a yes/no answer, else None."""
    w = words(text)
    if not w:
        return None
    if w[0] in ("yes", "no"):
        return w[0]
    n = normalize_answer(" ".join(w[:4]))
    return n if n in ("yes", "no") else None


def options(question: str) -> list[str]:
    """Choices offered by an either/or question ("Is this a CT or an MRI?" → ["ct", "mri"]), else []."""
    q = (question or "").strip().rstrip("?").lower()
    if " or " not in q:
        return []
    left, right = q.rsplit(" or ", 1)
    right_opt = normalize_answer(right)
    # the left option is as many trailing words of `left` as the right option has (at least one)
    lw = words(left)
    n = max(1, len(right_opt.split()))
    left_opt = normalize_answer(" ".join(lw[-n:]))
    if not left_opt or not right_opt:
        return []
    return [left_opt, right_opt]


_LEAD = re.compile(r"^(is|are|was|were|does|do|did|can|could|has|have|will|should|would|may)\s+(there\s+)?"
                   r"(the\s+|a\s+|an\s+|any\s+|this\s+|these\s+)?(patient\s+(have|has)\s+|evidence\s+of\s+|signs?\s+of\s+)?")


def finding_terms(question: str) -> list[str]:
    """The content words (stemmed) of the finding a yes/no question asks about."""
    q = " ".join(words(question))
    q = _LEAD.sub("", q)
    return [stem(w) for w in q.split() if w not in STOP and w not in ("image", "film", "scan", "study", "radiograph")]


def report_asserts(question: str, text: str) -> str | None:
    """Negation-aware presence of the question's finding in report text: "yes" when a sentence mentions it without
    negation, "no" when every mention is negated, None when it is not mentioned."""
    terms = finding_terms(question)
    if not terms:
        return None
    pos = neg = 0
    for sent in split_sentences(text):
        if sent.startswith("Q: "):
            continue
        for clause in _CLAUSE.split(sent.lower()):
            cw = [stem(w) for w in words(clause)]
            idx = [i for i, w in enumerate(cw) if w in terms]
            # every finding word must be there (a two-word finding like "pleural effusion" needs both); from three
            # words on, one may be missing
            need = len(set(terms)) if len(set(terms)) <= 2 else len(set(terms)) - 1
            if not idx or len(set(terms) & set(cw)) < need:
                continue
            first = min(idx)
            before = " " + " ".join(words(clause)[max(0, first - NEG_WINDOW):first]) + " "
            after = " " + " ".join(words(clause)[first:]) + " "
            if any(f" {t} " in before for t in PRE_NEG) or any(f" {t} " in after for t in POST_NEG):
                neg += 1
            else:
                pos += 1
    if pos:
        return "yes"
    if neg:
        return "no"
    return None


def overlap(a: str, b: str) -> float:
    """Share of ``a``'s content words found in ``b`` (0 when ``a`` has none)."""
    ca = content_words(a)
    if not ca:
        return 0.0
    return len(ca & content_words(b)) / len(ca)


def jaccard(a: str, b: str) -> float:
    ca, cb = content_words(a), content_words(b)
    if not ca or not cb:
        return 0.0
    return len(ca & cb) / len(ca | cb)


def novel_terms(sentence: str, sources: list[str], question: str = "") -> list[str]:
    """Content words of ``sentence`` found neither in any source nor in the question (generic phrasing words
    excepted): what the answer asserts without evidence."""
    have: set[str] = content_words(question)
    for src in sources:
        have |= content_words(src)
    out = []
    for w in words(sentence):
        if w in STOP or w in GENERIC or len(w) < 3 or w.isdigit() or w.startswith("k") and w[1:].isdigit():
            continue
        if stem(w) not in have and w not in out:
            out.append(w)
    return out
