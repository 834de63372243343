"""Text normalisation, tokenisation and negation scope for concept linking.

One normaliser serves both sides: the lexicon (concept names and synonyms, normalised once at build time) and the
text being linked (normalised per call), so that a surface form matches exactly when the normalised token
sequences are equal. Normalisation: Unicode compatibility folding, accents stripped, lower case, tokens are runs of
letters/digits (punctuation and hyphens separate tokens), and a light plural folding (``effusions`` → ``effusion``,
``opacities`` → ``opacity``) applied identically on both sides.

Negation and hedging come from ragmed's one detector, :mod:`ragmed.text.negation` (NegEx-style), re-exported here.
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


# --- negation: ragmed's one detector lives in ragmed.text.negation (shared with the answerers) ---------------------
from ragmed.text.negation import (POST_NEGATION, POST_UNCERTAIN, PRE_NEGATION, PRE_UNCERTAIN,  # noqa: E402,F401
                                  PSEUDO_NEGATION, TERMINATORS, negated_tokens, sentence_ids, uncertain_tokens)
from ragmed.text.negation import (POST_TABLE as _POST, PRE_TABLE as _PRE, PSEUDO_TABLE as _PSEUDO,  # noqa: E402,F401
                                  TERM_TABLE as _TERM, UNCERTAIN_POST_TABLE as _UPOST, UNCERTAIN_PRE_TABLE as _UPRE)
from ragmed.text.negation import match_at as _match_at  # noqa: E402,F401
