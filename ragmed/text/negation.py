"""ragmed's one negation and uncertainty detector (NegEx-style, Chapman et al. 2001), shared by concept linking
(:mod:`ragmed.knowledge`) and by the answerers that read report text (:mod:`ragmed.generate`).

Two levels:

- token level: :func:`negated_tokens` / :func:`uncertain_tokens` mark, for every token of a text, whether it lies in
  the scope of a negation ("no", "without", "… is not seen") or a hedge ("may represent", "possible", "versus").
- finding level: :func:`finding_status` says what a text asserts about *one finding* (a list of content words such as
  ``["pleural", "effusion"]``): ``"present"``, ``"absent"``, ``"uncertain"`` or ``None`` (not mentioned). The negation
  is scoped to the finding's own words, wherever they stand in the sentence: "Head CT: no acute abnormality" denies
  "acute abnormality" although "CT" comes first, and "Pleural effusion not recognizable" denies the effusion.

The trigger lists are written for ragmed (they follow NegEx's published trigger categories: pre- and post-negation
triggers, pseudo-triggers that are not negations such as "no change", and terminators that close a scope). The
maintained NegEx implementations on PyPI (negspacy, medspaCy's ConText) need spaCy and its models, which ragmed does
not otherwise require, hence this small hand-written detector. A leaf module: it imports nothing from ragmed.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Sequence

_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)
_SENT_END_RE = re.compile(r"[.!?](?=\s|$)|\n\s*\n|;")
_KEEP_S = ("ss", "us", "is", "ys", "os", "as", "ps", "xs")  # never folded by the plural rule (Latin/Greek singulars)

PRESENT, ABSENT, UNCERTAIN = "present", "absent", "uncertain"


def fold(text: str) -> str:
    """Compatibility-fold, strip accents, lower-case."""
    t = unicodedata.normalize("NFKD", text)
    t = "".join(c for c in t if not unicodedata.combining(c))
    return t.lower()


def norm_token(tok: str) -> str:
    """Lower-cased token with light plural folding (``effusions`` → ``effusion``, ``opacities`` → ``opacity``)."""
    t = tok.lower()
    n = len(t)
    if n > 4 and t.endswith("ies"):
        return t[:-3] + "y"
    if n > 4 and t.endswith(("ches", "shes", "xes", "sses")):
        return t[:-2]
    if n > 3 and t.endswith("s") and not t.endswith(_KEEP_S):
        return t[:-1]
    return t


def stem(w: str) -> str:
    """A crude, deterministic stemmer (plural and common suffixes) for matching a question's words to a report's."""
    for suf in ("ements", "ement", "ations", "ation", "ness", "ities", "ity", "ings", "ing", "ies", "ed", "es", "s"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            return w[: -len(suf)]
    return w


@dataclass(frozen=True)
class Token:
    text: str  # as written
    norm: str  # normalised (norm_token of the folded text)
    start: int
    end: int


def tokenize(text: str) -> list[Token]:
    """Tokens with character offsets into ``text`` (offsets of the original string, not of the folded one)."""
    out = []
    for m in _TOKEN_RE.finditer(text or ""):
        raw = m.group(0)
        f = fold(raw)
        if not f.isascii():  # keep non-Latin scripts as they are
            f = raw.lower()
        out.append(Token(raw, norm_token(f), m.start(), m.end()))
    return out


# --- trigger lists ---------------------------------------------------------------------------------------------
PRE_NEGATION = [
    "no", "not", "without", "denies", "denied", "deny", "negative for", "free of", "absence of", "absent",
    "no evidence of", "no sign of", "no signs of", "no evidence for", "no findings of", "no suggestion of",
    "there is no", "there are no", "ruled out", "never", "nor", "neither",
    "resolution of", "clear of", "fails to reveal", "no new", "no acute", "no definite",
    "no significant", "no focal", "no visible", "no obvious", "no displaced", "absent of", "lack of", "lacks",
    "unremarkable for", "not demonstrate", "no radiographic evidence of", "interval resolution of",
]
POST_NEGATION = [
    "is absent", "are absent", "was absent", "were absent", "not seen", "not identified", "not present",
    "not visualized", "not visualised", "not demonstrated", "not appreciated", "not detected", "not evident",
    "is not", "are not", "was not", "were not", "has resolved", "have resolved", "resolved", "is negative",
    "are negative", "ruled out", "unlikely", "not noted", "not found", "has cleared", "have cleared",
    "not recognizable", "not recognisable", "not recognized", "not recognised", "not visible", "not apparent",
    "not appreciable", "not shown", "not depicted", "not demonstrable", "not observed", "not detectable",
]
PSEUDO_NEGATION = [
    "no change", "no significant change", "no interval change", "no increase", "no decrease", "not only",
    "not necessarily", "without change", "not changed", "no further", "not certain if", "not certain whether",
    "gram negative", "not ruled out", "not been ruled out", "not excluded", "cannot be excluded",
    "can not be excluded", "cannot exclude", "not rule out", "no interval", "without any change", "not well",
]
TERMINATORS = [
    "but", "however", "although", "though", "except", "aside from", "apart from", "which", "whereas", "yet",
    "still", "otherwise", "there is", "there are", "with the exception of", "other than",
]
PRE_UNCERTAIN = [
    "possible", "possibly", "probable", "probably", "may represent", "may be", "may reflect", "may indicate",
    "could represent", "could be", "could reflect", "might", "might be", "suggestive of", "suggests", "suggesting",
    "suspicious for", "suspected", "suspect", "questionable", "worrisome for", "concerning for", "cannot exclude",
    "can not exclude", "cannot rule out", "versus", "vs", "differential", "differential diagnosis", "likely",
    "consider", "considered", "rule out", "r o", "question of", "equivocal", "presumed", "presumably",
    "question", "questioned", "suggest", "suggestion of", "could obscure", "may obscure", "if", "if there is",
    "if there are", "cannot be excluded", "not excluded", "to exclude", "evaluate for", "assess for",
]
POST_UNCERTAIN = [
    "is possible", "are possible", "not excluded", "cannot be excluded", "can not be excluded",
    "not been excluded", "is suspected", "are suspected", "is questionable", "versus", "vs", "is likely",
    "are likely", "is not excluded", "not ruled out", "could have this appearance", "can have this appearance",
    "could account for", "could be present", "may be present", "is not excluded", "cannot be entirely excluded",
]


def _phrases(words: list[str]) -> dict[tuple[str, ...], int]:
    out: dict[tuple[str, ...], int] = {}
    for w in words:
        key = tuple(norm_token(t) for t in _TOKEN_RE.findall(fold(w)))
        out[key] = len(key)
    return out


_PRE = _phrases(PRE_NEGATION)
_POST = _phrases(POST_NEGATION)
_PSEUDO = _phrases(PSEUDO_NEGATION)
_TERM = _phrases(TERMINATORS)
_UPRE = _phrases(PRE_UNCERTAIN)
_UPOST = _phrases(POST_UNCERTAIN)
_MAXN = max(len(k) for d in (_PRE, _POST, _PSEUDO, _TERM, _UPRE, _UPOST) for k in d)


# the trigger lists as phrase tables (normalised token tuples → length), for callers that scan tokens themselves
PRE_TABLE, POST_TABLE, PSEUDO_TABLE, TERM_TABLE, UNCERTAIN_PRE_TABLE, UNCERTAIN_POST_TABLE = (
    _PRE, _POST, _PSEUDO, _TERM, _UPRE, _UPOST)


def match_at(norms: list[str], i: int, table: dict[tuple[str, ...], int]) -> int:
    """Length of the longest phrase of ``table`` starting at token i (0 if none)."""
    for n in range(min(_MAXN, len(norms) - i), 0, -1):
        if tuple(norms[i:i + n]) in table:
            return n
    return 0


_match_at = match_at


def sentence_ids(text: str, tokens: Sequence) -> list[int]:
    """Sentence/clause number of every token (sentence end, blank line and ';' split)."""
    bounds = [m.end() for m in _SENT_END_RE.finditer(text)]
    out, s, j = [], 0, 0
    for t in tokens:
        while j < len(bounds) and bounds[j] <= t.start:
            j += 1
            s += 1
        out.append(s)
    return out


def _scope(text: str, tokens: Sequence, protect, pre, post, pseudo, both_last: str | None) -> list[bool]:
    n = len(tokens)
    norms = [t.norm for t in tokens]
    sid = sentence_ids(text, tokens)
    hit = [False] * n
    inside = [False] * n
    for a, b in protect:
        for k in range(a, b):
            inside[k] = True

    def forward(i: int, k: int) -> None:
        j = i + k
        while j < n and sid[j] == sid[i] and not _match_at(norms, j, _TERM):
            hit[j] = True
            j += 1

    i = 0
    while i < n:
        if inside[i]:
            i += 1
            continue
        k = _match_at(norms, i, pseudo)
        if k:
            i += k
            continue
        k_pre, k_post = _match_at(norms, i, pre), _match_at(norms, i, post)
        if k_pre and k_pre >= k_post:  # the longer trigger wins: "not seen" is a post-trigger, "not" alone a pre one
            forward(i, k_pre)
            i += k_pre
            continue
        if k_post:
            k = k_post
            if both_last and norms[i + k - 1] == both_last:  # "X is not Y": both sides
                forward(i, k)
            j = i - 1
            while j >= 0 and sid[j] == sid[i] and not _match_at(norms, j, _TERM):
                hit[j] = True
                j -= 1
            i += k
            continue
        i += 1
    return hit


def negated_tokens(text: str, tokens: Sequence, protect: Iterable[tuple[int, int]] = ()) -> list[bool]:
    """For every token, whether it lies in the scope of a negation trigger.

    Scope of a pre-trigger: the following tokens up to the end of the clause or a terminator; of a post-trigger:
    the preceding tokens of the clause back to its start or a terminator. Pseudo-triggers are skipped whole; where a
    pre- and a post-trigger start at the same token, the longer wins. ``protect`` lists token ranges [i, j) (linked
    concepts) inside which no trigger is looked for, so that a concept name containing "not" or "absent" does not
    negate itself. ``tokens`` are :class:`Token` (or anything with ``.norm`` and ``.start``).
    """
    return _scope(text, tokens, protect, _PRE, _POST, _PSEUDO, "not")


def uncertain_tokens(text: str, tokens: Sequence, protect: Iterable[tuple[int, int]] = ()) -> list[bool]:
    """For every token, whether it lies in the scope of a hedge ("may represent", "possible", "versus" …)."""
    return _scope(text, tokens, protect, _UPRE, _UPOST, {}, None)


# --- finding level -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mention:
    """One mention of a finding: the sentence it is in, the finding's tokens, and what the sentence says of them."""

    sentence: str
    status: str  # present | absent | uncertain
    tokens: tuple[int, ...]


def _key(tok) -> str:
    return stem(fold(tok.text))


def finding_mentions(text: str, terms: Sequence[str]) -> list[Mention]:
    """Every sentence of ``text`` that mentions the finding ``terms`` (content words, compared after :func:`stem`),
    with its status. A finding of one or two words needs all of them in the sentence, of three or more all but one.
    Negation and hedging are scoped to the finding's own tokens: the mention is ``absent`` when one of them lies in a
    negation's scope, ``uncertain`` when one lies in a hedge's scope (and none is negated), else ``present``."""
    want = {stem(fold(t)) for t in terms if t}
    if not want or not text:
        return []
    need = len(want) if len(want) <= 2 else len(want) - 1
    toks = tokenize(text)
    if not toks:
        return []
    keys = [_key(t) for t in toks]
    if not want & set(keys):
        return []
    sid = sentence_ids(text, toks)
    neg = negated_tokens(text, toks)
    unc = uncertain_tokens(text, toks)
    by_sent: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        if k in want:
            by_sent.setdefault(sid[i], []).append(i)
    out = []
    for s, idx in by_sent.items():
        if len({keys[i] for i in idx}) < need:
            continue
        if any(neg[i] for i in idx):
            status = ABSENT
        elif any(unc[i] for i in idx):
            status = UNCERTAIN
        else:
            status = PRESENT
        first = [i for i, x in enumerate(sid) if x == s]
        sentence = text[toks[first[0]].start: toks[first[-1]].end]
        out.append(Mention(sentence, status, tuple(idx)))
    return out


def finding_status(text: str, terms: Sequence[str]) -> str | None:
    """What ``text`` asserts about the finding ``terms``: ``"present"`` when some mention asserts it, else ``"absent"``
    when a mention denies it, else ``"uncertain"`` when it is only hedged, ``None`` when it is not mentioned."""
    seen = {m.status for m in finding_mentions(text, terms)}
    for s in (PRESENT, ABSENT, UNCERTAIN):
        if s in seen:
            return s
    return None


__all__ = ["Token", "Mention", "tokenize", "fold", "norm_token", "stem", "sentence_ids", "negated_tokens",
           "uncertain_tokens", "finding_mentions", "match_at", "PRE_TABLE", "POST_TABLE", "PSEUDO_TABLE", "TERM_TABLE",
           "UNCERTAIN_PRE_TABLE", "UNCERTAIN_POST_TABLE", "finding_status", "PRE_NEGATION", "POST_NEGATION",
           "PSEUDO_NEGATION", "TERMINATORS", "PRE_UNCERTAIN", "POST_UNCERTAIN", "PRESENT", "ABSENT", "UNCERTAIN"]
