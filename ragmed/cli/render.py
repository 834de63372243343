"""Plain-text rendering of an Answer for the terminal."""
from __future__ import annotations

import textwrap

from ragmed.types import Answer


def render_answer(a: Answer, width: int = 100) -> str:
    out = []
    im = a.image
    if im:
        desc = ", ".join(f"{k} {v}" for k, v in (("modality", im.get("modality")), ("body part", im.get("body_part")),
                                                 ("view", im.get("view"))) if v)
        out.append(f"Image     {im.get('source')}" + (f" ({desc})" if desc else ""))
    route = (im or {}).get("route") or {}
    if a.domain or route:
        conf = f" (confidence {a.domain_confidence:.2f})" if a.domain_confidence is not None else ""
        how = f"; {route.get('method')}: {route.get('reason')}" if route.get("reason") else ""
        out.append(f"Domain    {a.domain or 'all domains searched'}{conf}{how}")
    out.append(f"Question  {a.question}")
    out.append("")
    out.append("Answer" + ("  [INSUFFICIENT EVIDENCE]" if a.insufficient_evidence else ""))
    for line in a.text.splitlines():
        out.extend(textwrap.wrap(line, width, initial_indent="  ", subsequent_indent="    ") or [""])
    if a.flags:
        out.append(f"  flags: {', '.join(a.flags)}")
    out.append("")
    sel = a.selection
    head = "Evidence"
    if sel is not None:
        head += f" (selector {sel.rule}: kept {len(sel.kept)} of {len(sel.scores)}; {sel.reason})"
    out.append(head)
    for e in a.evidence:
        ch = ", ".join(f"{c} {s:.3f}" for c, s in e.channels.items())
        mod = f" {e.modality}" if e.modality else ""
        out.append(f"  {e.ref} case {e.case_id}{mod}  score {e.score:.4f}  [{ch}]")
        excerpt = (e.excerpt or e.text)[:240].replace("\n", " ")
        out.extend(textwrap.wrap(excerpt, width, initial_indent="      ", subsequent_indent="      "))
    if a.knowledge:
        out.append("")
        out.append("Knowledge")
        for k in a.knowledge:
            cui = f", CUI {k.cui}" if k.cui else ""
            absent = " (absent in the reports)" if k.negated else ""
            out.append(f"  {k.ref} {k.name} ({k.concept_id}, {k.source}{cui}){absent}")
            if k.text:
                out.extend(textwrap.wrap(k.text[:300], width, initial_indent="      ", subsequent_indent="      "))
    out.append("")
    t = a.timings
    out.append("Models    " + ", ".join(f"{k} {v}" for k, v in a.models.items()))
    if "total" in t:
        out.append(f"Time      {t['total'] * 1000:.0f} ms")
    out.append(f"Notice    {a.intended_use}")
    return "\n".join(out)
