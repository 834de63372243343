"""Text normalisation, tokenisation and negation scope for concept linking.

One normaliser serves both sides: the lexicon (concept names and synonyms, normalised once at build time) and the
text being linked (normalised per call), so that a surface form matches exactly when the normalised token
sequences are equal. Normalisation: Unicode compatibility folding, accents stripped, lower case, tokens are runs of
letters/digits (punctuation and hyphens separate tokens), and a light plural folding (``effusions`` → ``effusion``,
``opacities`` → ``opacity``) applied identically on both sides.

Negation and hedging come from ragmed's one detector, :mod:`ragmed.text.negation` (NegEx-style), re-exported here.
"""
from __future__ import annotations

# tokens, folding and the plural rule are the negation detector's own (one tokeniser for linking and negation)
import re

from ragmed.text.negation import Token, fold, norm_token, tokenize  # noqa: F401 - re-exported

_WORD = re.compile(r"[^\W_]+", re.UNICODE)  # the lexicon key folds the whole surface form first, then splits


def normalise(text: str) -> str:
    """The lexicon key of a surface form: its normalised tokens joined by one space."""
    return " ".join(norm_token(t) for t in _WORD.findall(fold(text)))


# --- negation: ragmed's one detector lives in ragmed.text.negation (shared with the answerers) ---------------------
from ragmed.text.negation import (POST_NEGATION, POST_UNCERTAIN, PRE_NEGATION, PRE_UNCERTAIN,  # noqa: E402,F401
                                  PSEUDO_NEGATION, TERMINATORS, negated_tokens, sentence_ids, uncertain_tokens)
from ragmed.text.negation import (POST_TABLE as _POST, PRE_TABLE as _PRE, PSEUDO_TABLE as _PSEUDO,  # noqa: E402,F401
                                  TERM_TABLE as _TERM, UNCERTAIN_POST_TABLE as _UPOST, UNCERTAIN_PRE_TABLE as _UPRE)
from ragmed.text.negation import match_at as _match_at  # noqa: E402,F401
