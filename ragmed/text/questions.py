"""One validation of a clinician's question for every entry point (the CLI, the Python API, the HTTP service), and
the question-type guess (closed / open / report).

:func:`validate_question` returns the cleaned question or raises :class:`QuestionError` (a ``ValueError`` subclass
and a :class:`ragmed.errors.ConfigError`, so the CLI prints it as one line and the service answers 400; it carries a
``code``: ``empty`` or ``too-long``) with the same message everywhere. An empty question is refused
unless the caller asks for report generation explicitly (``allow_empty=True`` / ``task="report"``); a question longer
than :data:`MAX_QUESTION_CHARS` is refused, never truncated. A leaf module: it imports only :mod:`ragmed.errors`.
"""
from __future__ import annotations

import re

from ragmed.errors import ConfigError

MAX_QUESTION_CHARS = 4000
TASKS = ("closed", "open", "report")
# a closed (yes/no) question starts with one of these auxiliaries
CLOSED_VERBS = ("is", "are", "was", "were", "does", "do", "did", "can", "could", "has", "have", "will", "should",
                "would", "may")
_CLOSED_START = tuple(v + " " for v in CLOSED_VERBS)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class QuestionError(ConfigError, ValueError):
    """A question ragmed refuses. ``code``: ``empty`` | ``too-long`` | ``task`` (an unknown task name)."""

    stage = "question"

    def __init__(self, message: str, code: str):
        self.code = code
        super().__init__(message)


def validate_question(question: str | None, *, allow_empty: bool = False, task: str | None = None,
                      max_chars: int = MAX_QUESTION_CHARS) -> str:
    """The question, stripped (control characters removed), or :class:`QuestionError`.

    - empty (or only blanks): refused with ``"the question is empty; ask a question, or ask for a report explicitly
      (task='report')"`` unless ``allow_empty`` or ``task == "report"`` (then ``""`` comes back: report generation);
    - longer than ``max_chars`` characters: refused with ``"the question is N characters long; the limit is M"``.
    """
    q = _CONTROL.sub(" ", question or "").strip()
    if not q:
        if allow_empty or task == "report":
            return ""
        raise QuestionError("the question is empty; ask a question, or ask for a report explicitly (task='report')",
                            "empty")
    if len(q) > max_chars:
        raise QuestionError(f"the question is {len(q)} characters long; the limit is {max_chars}", "too-long")
    return q


def validate_task(task: str | None) -> str | None:
    """``task`` when it is one of :data:`TASKS` or None (guess from the question), else :class:`QuestionError`."""
    if task is None or task in TASKS:
        return task
    raise QuestionError(f"unknown task {task!r}; use one of {', '.join(TASKS)}, or none to guess it from the question",
                        "task")


def guess_task(question: str) -> str:
    """``closed`` for a yes/no or either/or question, ``open`` otherwise, ``report`` for no question. Templated
    auxiliaries such as "Is/Are there …" or "Does/Do …" count as their first form."""
    q = (question or "").strip().lower()
    if not q:
        return "report"
    q = re.sub(r"^([a-z]+)/[a-z]+\b", r"\1", q)
    return "closed" if q.startswith(_CLOSED_START) or " or " in q and q.endswith("?") else "open"


__all__ = ["MAX_QUESTION_CHARS", "TASKS", "CLOSED_VERBS", "QuestionError", "validate_question", "validate_task",
           "guess_task"]
