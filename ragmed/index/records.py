"""What a search returns at the index boundary: :class:`Hit` (one retrieved item) and :class:`CaseRecord`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Hit:
    """One retrieved item at the index boundary."""

    case_id: str
    score: float
    channel: str  # "image-image", "image-report", "question-report", "question-image", "bm25" …
    domain: str = "all"
    image: str | None = None  # source path of the matched image (image channels)
    vector_id: int = -1


@dataclass
class CaseRecord:
    case_id: str
    text: str
    sections: dict[str, str]
    metadata: dict[str, str]
    split: str | None
    domain: str
    images: list[dict[str, Any]] = field(default_factory=list)  # source, content_hash, modality, body_part, view
