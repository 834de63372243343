"""A concept mention found by the linker (shared by the exact linker, ``graph.py``, and the paraphrase fallback,
``embed.py``; kept apart so that neither imports the other)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCORE_PREFERRED, SCORE_SYNONYM, SCORE_ABBREVIATION = 1.0, 0.95, 0.9
UNCERTAIN_FACTOR = 0.5  # a hedged mention ("may represent X", "X versus Y") scores half


@dataclass
class LinkedConcept:
    """One concept mention in a text. ``span`` is (start, end) character offsets into the linked text."""

    id: str
    name: str
    source: str
    cui: str | None
    span: tuple[int, int]
    negated: bool
    score: float
    text: str = ""  # the words matched, as written
    method: str = "exact"  # exact | synonym | variant | abbreviation | embedding
    uncertain: bool = False  # in the scope of a hedge; its score is multiplied by UNCERTAIN_FACTOR
    types: list[str] = field(default_factory=list)
    alternatives: list[str] = field(default_factory=list)  # other concepts sharing this surface form
    reason: str = ""  # why this concept and not an alternative ("only candidate", "context: …", "source priority …")

    def to_json(self) -> dict[str, Any]:
        """The documented JSON schema of ``ragmed kg link --json``."""
        return {"id": self.id, "name": self.name, "source": self.source, "cui": self.cui,
                "span": [self.span[0], self.span[1]], "negated": self.negated, "uncertain": self.uncertain,
                "score": round(self.score, 4), "types": list(self.types), "method": self.method,
                "reason": self.reason}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["span"] = list(self.span)
        return d
