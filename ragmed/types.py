"""Records that cross stage boundaries: retrieved evidence, knowledge evidence, selections and answers.

Each is a plain dataclass with ``to_dict()`` so that the CLI's ``--json``, the HTTP service and the Python API all
speak the same schema (``ANSWER_SCHEMA``; documented in the README).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ANSWER_SCHEMA = 1
INTENDED_USE = ("Decision support only, not a diagnosis: ragmed retrieves similar prior cases and medical knowledge "
                "and summarises them with citations. A qualified clinician must interpret the image and make every "
                "clinical decision.")


@dataclass
class Evidence:
    """A retrieved case, as the selector and generator see it. ``ref`` is its citation mark, e.g. ``"[1]"``."""

    case_id: str
    score: float  # fused score used for ranking and selection (higher is better)
    ref: str = ""
    text: str = ""  # the case's report text (de-identified corpus text)
    excerpt: str = ""  # the part shown / quoted
    domain: str = "all"
    modality: str | None = None
    image: str | None = None  # matched image, path relative to the corpus
    channels: dict[str, float] = field(default_factory=dict)  # channel -> raw similarity (or BM25 score)
    ranks: dict[str, int] = field(default_factory=dict)  # channel -> 1-based rank
    similarity: float | None = None  # calibrated similarity in [0, 1] (fusion, cross-domain merge, gap selector)
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class KnowledgeEvidence:
    """A concept from the knowledge graph, cited as ``[K1]`` …"""

    concept_id: str  # e.g. "DOID:1234", "HP:0002090", "C0032285", "ICD10CM:J18.9"
    name: str
    source: str  # e.g. "DOID", "HPO", "ICD10CM", "MSH", "UMLS"
    ref: str = ""
    cui: str | None = None
    text: str = ""  # rendered definition / parents / relations
    score: float = 0.0
    negated: bool = False
    relations: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Selection:
    """What the adaptive selector kept and why."""

    kept: list[Evidence]
    rule: str  # "gap", "rule-ltt", "fixed"
    cut_at: int | None  # number kept; None when the rule did not cut
    scores: list[float] = field(default_factory=list)  # the candidate scores it saw, best first
    reason: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kept"] = [e.case_id for e in self.kept]
        return d


@dataclass
class Generation:
    text: str
    citations: list[str]  # refs the text cites, e.g. ["[1]", "[K2]"]
    model: str
    flags: list[str] = field(default_factory=list)  # e.g. "uncited", "unsupported", "insufficient-evidence"
    insufficient: bool = False


@dataclass
class Answer:
    question: str
    text: str
    evidence: list[Evidence]
    knowledge: list[KnowledgeEvidence] = field(default_factory=list)
    citations: list[str] = field(default_factory=list)
    insufficient_evidence: bool = False
    domain: str | None = None
    domain_confidence: float | None = None
    selection: Selection | None = None
    image: dict[str, Any] = field(default_factory=dict)  # de-identified: source, modality, body part, view, hash
    models: dict[str, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    schema: int = ANSWER_SCHEMA
    intended_use: str = INTENDED_USE

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "intended_use": self.intended_use,
            "question": self.question,
            "answer": self.text,
            "insufficient_evidence": self.insufficient_evidence,
            "citations": self.citations,
            "domain": self.domain,
            "domain_confidence": self.domain_confidence,
            "image": self.image,
            "evidence": [e.to_dict() for e in self.evidence],
            "knowledge": [k.to_dict() for k in self.knowledge],
            "selection": self.selection.to_dict() if self.selection else None,
            "models": self.models,
            "flags": self.flags,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
