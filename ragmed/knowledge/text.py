"""Text normalisation, tokenisation and negation scope for concept linking.

One normaliser serves both sides: the lexicon (concept names and synonyms, normalised once at build time) and the
text being linked (normalised per call), so that a surface form matches exactly when the normalised token
sequences are equal. Normalisation: Unicode compatibility folding, accents stripped, lower case, tokens are runs of
letters/digits (punctuation and hyphens separate tokens), and a light plural folding (``effusions`` → ``effusion``,
``opacities`` → ``opacity``) applied identically on both sides.

Negation (and hedging: "may represent", "versus") is NegEx-style (Chapman et al. 2001): a hand-written list of pre- and post-negation triggers, pseudo-triggers
that are not negations ("no change"), and terminators that close a trigger's scope (sentence end, ";", "but",
"however" …). The lists below are written for ragmed (they follow NegEx's published trigger categories); the
maintained NegEx implementations on PyPI (negspacy, medspaCy's ConText) need spaCy and its models, which ragmed does
not otherwise require.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)
_SENT_END_RE = re.compile(r"[.!?](?=\s|$)|\n\s*\n|;")

# tokens never folded by the plural rule (Latin/Greek singulars ending in s)
_KEEP_S = ("ss", "us", "is", "ys", "os", "as", "ps", "xs")


def fold(text: str) -> str:
    """Compatibility-fold, strip accents, lower-case."""
    t = unicodedata.normalize("NFKD", text)
    t = "".join(c for c in t if not unicodedata.combining(c))
    return t.lower()


def norm_token(tok: str) -> str:
    """Lower-cased token with light plural folding (both lexicon and text go through this)."""
    t = tok.lower()
    n = len(t)
    if n > 4 and t.endswith("ies"):
        return t[:-3] + "y"
    if n > 4 and t.endswith(("ches", "shes", "xes", "sses")):
        return t[:-2]
    if n > 3 and t.endswith("s") and not t.endswith(_KEEP_S):
        return t[:-1]
    return t


@dataclass(frozen=True)
class Token:
    text: str  # as written
    norm: str  # normalised
    start: int
    end: int


def tokenize(text: str) -> list[Token]:
    """Tokens with character offsets into ``text`` (offsets of the original string, not of the folded one)."""
    out = []
    for m in _TOKEN_RE.finditer(text):
        raw = m.group(0)
        f = fold(raw)
        if not f.isascii():  # keep non-Latin scripts as they are
            f = raw.lower()
        out.append(Token(raw, norm_token(f), m.start(), m.end()))
    return out


def normalise(text: str) -> str:
    """The lexicon key of a surface form: its normalised tokens joined by one space."""
    return " ".join(norm_token(t) for t in _TOKEN_RE.findall(fold(text)))


# --- negation (NegEx-style; hand-written lists) ----------------------------------------------------------------

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
]
POST_UNCERTAIN = [
    "is possible", "are possible", "not excluded", "cannot be excluded", "can not be excluded",
    "not been excluded", "is suspected", "are suspected", "is questionable", "versus", "vs", "is likely",
    "are likely", "is not excluded", "not ruled out",
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


def _match_at(norms: list[str], i: int, table: dict[tuple[str, ...], int]) -> int:
    """Length of the longest phrase of ``table`` starting at token i (0 if none)."""
    for n in range(min(_MAXN, len(norms) - i), 0, -1):
        if tuple(norms[i:i + n]) in table:
            return n
    return 0


def sentence_ids(text: str, tokens: list[Token]) -> list[int]:
    """Sentence/clause number of every token (sentence end, blank line and ';' split)."""
    bounds = [m.end() for m in _SENT_END_RE.finditer(text)]
    out, s, j = [], 0, 0
    for t in tokens:
        while j < len(bounds) and bounds[j] <= t.start:
            j += 1
            s += 1
        out.append(s)
    return out


def _scope(text: str, tokens: list[Token], protect, pre, post, pseudo, both_last: str | None) -> list[bool]:
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
        k = _match_at(norms, i, pre)
        if k:
            forward(i, k)
            i += k
            continue
        k = _match_at(norms, i, post)
        if k:
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


def negated_tokens(text: str, tokens: list[Token], protect: list[tuple[int, int]] = ()) -> list[bool]:
    """For every token, whether it lies in the scope of a negation trigger.

    Scope of a pre-trigger: the following tokens up to the end of the clause or a terminator; of a post-trigger:
    the preceding tokens of the clause back to its start or a terminator. Pseudo-triggers are skipped whole.
    ``protect`` lists token ranges [i, j) (linked concepts) inside which no trigger is looked for, so that a
    concept name containing "not" or "absent" does not negate itself.
    """
    return _scope(text, tokens, protect, _PRE, _POST, _PSEUDO, "not")


def uncertain_tokens(text: str, tokens: list[Token], protect: list[tuple[int, int]] = ()) -> list[bool]:
    """For every token, whether it lies in the scope of a hedge ("may represent", "possible", "versus" …)."""
    return _scope(text, tokens, protect, _UPRE, _UPOST, {}, None)
