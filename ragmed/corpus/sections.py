"""Section a free-text radiology report (INDICATION / COMPARISON / TECHNIQUE / FINDINGS / IMPRESSION)."""
from __future__ import annotations

import re

_ALIASES = {
    "indication": "indication", "indications": "indication", "history": "indication", "clinical history": "indication",
    "reason for exam": "indication", "reason for examination": "indication", "clinical information": "indication",
    "comparison": "comparison", "comparisons": "comparison",
    "technique": "technique", "examination": "technique", "exam": "technique", "procedure": "technique",
    "findings": "findings", "finding": "findings", "report": "findings",
    "impression": "impression", "impressions": "impression", "conclusion": "impression", "conclusions": "impression",
    "summary": "impression", "opinion": "impression", "diagnosis": "impression",
}
_HEADER = re.compile(
    r"(?im)(?:^|(?<=[\n.]))\s*(" + "|".join(sorted((re.escape(k) for k in _ALIASES), key=len, reverse=True)) + r")\s*:"
)


def split_sections(text: str) -> dict[str, str]:
    """Return ``{section: text}``; text before any header goes to ``"findings"`` when no findings header exists,
    else to ``"preamble"``. Unknown reports come back as ``{"findings": text}``."""
    text = (text or "").strip()
    if not text:
        return {}
    matches = list(_HEADER.finditer(text))
    if not matches:
        return {"findings": text}
    out: dict[str, str] = {}
    pre = text[: matches[0].start()].strip()
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[m.end():end].strip()
        key = _ALIASES[m.group(1).lower()]
        if body:
            out[key] = (out[key] + " " + body).strip() if key in out else body
    if pre:
        out["preamble" if "findings" in out else "findings"] = pre
    return out
