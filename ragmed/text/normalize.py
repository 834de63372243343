"""Answer normalisation: the one module for it (issue 11 merged the evaluation's and the generator's copies here).

Two functions, because their callers need different things and changing either would change published figures:

- :func:`normalize_answer` / :func:`answer_tokens` — for **scoring** (``ragmed eval vqa``): NFKC case-folding,
  hyphens as spaces, punctuation and *every* article dropped, number words as digits (``"Two  lesions."`` →
  ``"2 lesions"``; ``"The left lung"`` → ``"left lung"``; ``"Yes!"`` → ``"yes"``; decimals survive: ``"2.5 cm"``).
- :func:`answer_key` — for **matching** answers inside evidence (the vote generator, citation checks): ASCII words,
  a *leading* article dropped, and yes/no synonyms collapsed (``"present"``, ``"positive"``, ``"true"`` → ``"yes"``;
  ``"absent"``, ``"none"``, ``"not seen"`` → ``"no"``), numbers left as written.

A leaf module (no other ragmed import).
"""
from __future__ import annotations

import re
import unicodedata

YES = frozenset({"yes", "y", "true", "present", "positive", "yes it is", "yes there is"})
NO = frozenset({"no", "n", "false", "absent", "negative", "none", "no there is not", "not seen"})
_WORD = re.compile(r"[a-z0-9]+")

ARTICLES = frozenset({"a", "an", "the"})
_UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                     "fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if i >= 2}
_ORDINALS = {"first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th", "sixth": "6th",
             "seventh": "7th", "eighth": "8th", "ninth": "9th", "tenth": "10th"}
_TOKEN = re.compile(r"\d+(?:\.\d+)?|[^\W_]+", re.UNICODE)


def _numbers_to_digits(tokens: list[str]) -> list[str]:
    """Number words to digits: "two" → "2", "twenty one" / "twenty-one" → "21", "one hundred" → "100"."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t in _UNITS or t in _TENS or (t == "hundred" and out and out[-1].isdigit()):
            value = None
            j = i
            if t == "hundred":  # "<n> hundred"
                value = int(out.pop()) * 100
                j = i + 1
            else:
                value = _UNITS.get(t, _TENS.get(t))
                j = i + 1
                if t in _TENS and j < len(tokens) and tokens[j] in _UNITS and _UNITS[tokens[j]] < 10:
                    value += _UNITS[tokens[j]]
                    j += 1
                if j < len(tokens) and tokens[j] == "hundred":
                    value *= 100
                    j += 1
            out.append(str(value))
            i = j
            continue
        out.append(_ORDINALS.get(t, t))
        i += 1
    return out


def answer_tokens(text: str) -> list[str]:
    """Normalised tokens: case-folded, accents kept, punctuation dropped, articles dropped, numbers as digits."""
    t = unicodedata.normalize("NFKC", str(text or "")).casefold()
    t = t.replace("-", " ")
    toks = [w for w in _TOKEN.findall(t) if w not in ARTICLES]
    return _numbers_to_digits(toks)


def normalize_answer(text: str) -> str:
    return " ".join(answer_tokens(text))


def answer_key(a: str) -> str:
    """Case-folded, punctuation and a leading article removed, yes/no synonyms collapsed (see the module
    docstring: the generators' matching key, not the evaluation's normaliser)."""
    t = " ".join(_WORD.findall((a or "").lower()))
    t = re.sub(r"^(the|a|an)\s+", "", t)
    if t in YES:
        return "yes"
    if t in NO:
        return "no"
    return t


__all__ = ["normalize_answer", "answer_tokens", "answer_key", "YES", "NO", "ARTICLES"]
