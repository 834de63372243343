"""The public API that ragmed's edges (``ragmed.cli``, ``ragmed.serve``) and embedding apps use.

One import surface, so that the command line and the HTTP service never reach into a stage's submodules:

- answering: :class:`Pipeline` (``from_yaml`` / ``for_index`` / ``ask`` / ``retrieve`` / ``warm_up``);
- building: :func:`read_corpus`, :func:`build_from_config`, :func:`export_from_pacs` (a PACS over DICOMweb as a
  corpus);
- questions: :func:`validate_question` (the one check of the CLI, the API and the service), :func:`guess_task`;
- images: :func:`load_image`, and the DICOMweb client (:class:`DicomWebSource`, :class:`StudyRef`,
  :class:`StudyNotFoundError`, :class:`PacsError`).

Names are resolved on first use, so ``import ragmed.api`` stays cheap (no torch, FAISS or DICOMweb client).
"""
from __future__ import annotations

from typing import Any

_NAMES = {
    "Pipeline": "ragmed.pipeline",
    "build_from_config": "ragmed.pipeline",
    "read_corpus": "ragmed.corpus",
    "load_image": "ragmed.io",
    "DicomWebSource": "ragmed.io.dicomweb",
    "StudyRef": "ragmed.io.dicomweb",
    "StudyNotFoundError": "ragmed.io.dicomweb",
    "PacsError": "ragmed.io.dicomweb",
    "export_from_pacs": "ragmed.io.dicomweb",
    "validate_question": "ragmed.text.questions",
    "QuestionError": "ragmed.text.questions",
    "MAX_QUESTION_CHARS": "ragmed.text.questions",
    "guess_task": "ragmed.text.questions",
    "TASKS": "ragmed.text.questions",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    mod = _NAMES.get(name)
    if mod is None:
        raise AttributeError(f"module 'ragmed.api' has no attribute {name!r}")
    if mod == "ragmed.io.dicomweb":
        from ragmed.io import dicomweb as m
    elif mod == "ragmed.io":
        import ragmed.io as m
    elif mod == "ragmed.text.questions":
        from ragmed.text import questions as m
    elif mod == "ragmed.corpus":
        import ragmed.corpus as m
    else:
        import ragmed.pipeline as m
    return getattr(m, name)
