"""Small text helpers the generators share: content words, sentences, "Q: … A: …" pairs, answer normalisation and
whether a report asserts or denies a question's finding (through ragmed's one negation detector,
:mod:`ragmed.text.negation`). Pure functions, no model."""
from __future__ import annotations

import re

from ragmed.text.normalize import NO, YES, answer_key  # noqa: F401 - YES / NO re-exported (old import path)
from ragmed.text.negation import ABSENT, PRESENT, finding_status, stem  # noqa: F401  (stem: re-exported)

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


def words(text: str) -> list[str]:
    return WORD.findall((text or "").lower())


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
# words of a trailing "in this head CT" / "on the image": where the finding is looked for, not the finding itself
_SETTING = frozenset(
    "image images film scan study radiograph radiography picture view exam examination x ray xray cxr ct mri mr "
    "ultrasound us pa ap lateral frontal axial coronal sagittal slice head chest brain abdomen abdominal pelvis "
    "patient patients this the these a an given above".split())
_PREP = frozenset("in on within at from of seen".split())


def finding_terms(question: str) -> list[str]:
    """The content words (stemmed) of the finding a yes/no question asks about. A trailing phrase that only says
    where to look ("… in this head CT", "… on the image") is not part of the finding."""
    q = " ".join(words(question))
    q = _LEAD.sub("", q)
    ws = q.split()
    for i, w in enumerate(ws):
        if i and w in _PREP and all(x in _SETTING or x in _PREP for x in ws[i + 1:]):
            ws = ws[:i]
            break
    return [stem(w) for w in ws if w not in STOP and w not in ("image", "film", "scan", "study", "radiograph")]


def same_finding(question: str, other: str) -> bool:
    """Whether two yes/no questions ask about the same finding: their finding words overlap by at least half
    (Jaccard ≥ 0.5). "Is there a pleural effusion?" and "Is there an effusion?" do; "Is there a pneumothorax?" and
    "Is there a pleural effusion?" do not, however similar the sentences are."""
    a, b = set(finding_terms(question)), set(finding_terms(other))
    if not a or not b:
        return False
    return len(a & b) / len(a | b) >= 0.5


def report_asserts(question: str, text: str) -> str | None:
    """What report text says of the question's finding: "yes" when it asserts it, "no" when it denies it, None when
    it does not mention it or only hedges ("possible effusion"). Negation is scoped to the finding's own words
    (:func:`ragmed.text.negation.finding_status`); "Q: … A: …" pairs are not report text and are skipped."""
    terms = finding_terms(question)
    if not terms:
        return None
    body = "\n\n".join(s for s in split_sentences(text) if not s.startswith("Q: "))
    status = finding_status(body, terms)
    return {PRESENT: "yes", ABSENT: "no"}.get(status)


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
