"""The corpus records every reader produces: :class:`Case`, :class:`SkippedRow`, :class:`Corpus`."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Case:
    """One corpus entry: a report (may be empty) and zero or more images."""

    id: str
    images: list[str] = field(default_factory=list)  # absolute paths
    report: str = ""
    sections: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    split: str | None = None
    row: int = 0  # 1-based row (line) in the manifest, for reports; 0 when not from a file

    @property
    def text(self) -> str:
        """The text that is embedded and shown: the report, else findings + impression."""
        if self.report:
            return self.report
        return " ".join(v for k, v in self.sections.items() if k in ("findings", "impression")).strip()


@dataclass
class SkippedRow:
    row: int  # 1-based data row (0 for a whole file)
    case_id: str | None
    path: str | None  # image path relative to the manifest
    reason: str

    def to_dict(self) -> dict:
        return {"row": self.row, "case_id": self.case_id, "path": self.path, "reason": self.reason}


@dataclass
class Corpus:
    """An iterable of cases plus the rows that could not be used."""

    source: str
    root: Path  # images are relative to this directory
    cases: list[Case]
    skipped: list[SkippedRow] = field(default_factory=list)
    format: str = "csv"

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def __len__(self) -> int:
        return len(self.cases)

    def checksum(self) -> str:
        """Stable hash of the corpus content (ids, texts, image paths) for the index manifest."""
        h = hashlib.sha256()
        for c in self.cases:
            h.update(json.dumps([c.id, c.text, [Path(p).name for p in c.images], c.metadata], sort_keys=True).encode())
        return h.hexdigest()[:16]
