"""Citation checks shared by every generator: which refs a text cites, and whether they were given."""
from __future__ import annotations

import re

from ragmed.types import Evidence, KnowledgeEvidence

REF = re.compile(r"\[(K?\d+)\]")


def cited_refs(text: str) -> list[str]:
    seen: list[str] = []
    for m in REF.finditer(text):
        r = f"[{m.group(1)}]"
        if r not in seen:
            seen.append(r)
    return seen


def check_citations(text: str, evidence: list[Evidence], knowledge: list[KnowledgeEvidence]) -> tuple[list[str], list[str]]:
    """(citations that point at given evidence, flags). Flags: ``uncited`` when the text cites nothing it was
    given, ``unknown-citation`` when it cites a ref it was not given."""
    given = {e.ref for e in evidence} | {k.ref for k in knowledge}
    refs = cited_refs(text)
    valid = [r for r in refs if r in given]
    flags = []
    if not valid:
        flags.append("uncited")
    if len(valid) < len(refs):
        flags.append("unknown-citation")
    return valid, flags
