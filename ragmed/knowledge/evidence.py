"""Knowledge evidence for an answer: linked concepts of the question and the retrieved reports, with a small,
relevant neighbourhood, ranked and rendered as citable text.

Ranking (per concept): a mention in the question weighs 2, a report that asserts it 1, a report that mentions it
only negated 0.25 (the evidence that a finding is absent is still relevant to a question about it); each weight is
multiplied by the mention's score (hedged mentions count half), and by 0.3 for concepts that are not findings or
diseases (anatomy, imaging procedures, views, devices), so that those are cited after the findings. Ties go to concepts linked to other selected
concepts (is-a, phenotype or xref neighbours), then to concepts with a definition. The neighbourhood rendered for each
concept: its definition, is-a parents (up to 3), and up to 5 related concepts: mentioned ones first (a disease's
phenotypes, a phenotype's diseases), diseases that have this finding *and* at least two other findings of the texts
(ranked by how many they share), cross-references to other vocabularies.
"""
from __future__ import annotations

from collections import defaultdict

from ragmed.types import KnowledgeEvidence

W_QUESTION, W_REPORT, W_NEGATED = 2.0, 1.0, 0.25
W_CONTEXT = 0.3  # anatomy, imaging procedures, views, devices: cited after the findings and diseases
MAX_PARENTS, MAX_RELATED, MAX_TEXT = 3, 5, 600
MIN_SHARED = 2  # a disease is shown beside a finding when it also has >= 2 other findings of the texts


def knowledge_evidence(kg, question: str, reports: list[str], max_concepts: int = 5) -> list[KnowledgeEvidence]:
    if max_concepts <= 0:
        return []
    weight: dict[str, float] = defaultdict(float)
    asserted: dict[str, bool] = defaultdict(bool)
    cuis: dict[str, str | None] = {}
    in_question: set[str] = set()
    for m in kg.link(question or ""):
        weight[m.id] += W_QUESTION * m.score
        asserted[m.id] = asserted[m.id] or not m.negated
        in_question.add(m.id)
        cuis.setdefault(m.id, m.cui)
    for text in reports:
        seen: dict[str, tuple[bool, float]] = {}
        for m in kg.link(text or ""):
            prev = seen.get(m.id)
            if prev is None or (prev[0] and not m.negated) or m.score > prev[1]:
                seen[m.id] = (m.negated, m.score)
            cuis.setdefault(m.id, m.cui)
        for cid, (neg, score) in seen.items():
            weight[cid] += (W_NEGATED if neg else W_REPORT) * score
            asserted[cid] = asserted[cid] or not neg
    if not weight:
        return []
    from ragmed.knowledge.schema import FINDING_TYPES

    for cid in weight:
        i = kg.index[cid]
        if not FINDING_TYPES.intersection(kg.types_of(i)):
            weight[cid] *= W_CONTEXT
    linked = set(weight)

    def related(cid: str) -> list[tuple[str, str]]:
        return kg.neighbours(cid, direction="out") + kg.neighbours(cid, direction="in")

    connected = {cid: sum(1 for _, o in related(cid) if o in linked and o != cid) for cid in linked}
    ranked = sorted(linked, key=lambda c: (-weight[c], -connected[c], not kg.concept(c)["definition"], c))
    top = ranked[:max_concepts]
    best = max(weight[c] for c in top)
    out = []
    for cid in top:
        c = kg.concept(cid)
        rels = _relations(kg, cid, linked)
        out.append(KnowledgeEvidence(
            concept_id=cid, name=c["name"], source=c["source"], cui=cuis.get(cid) or c["cui"],
            text=_render(kg, c, rels), score=round(weight[cid] / best, 4),
            negated=not asserted[cid] and cid not in in_question, relations=rels))
    return out


def _relations(kg, cid: str, linked: set[str]) -> list[dict[str, str]]:
    rels: list[dict[str, str]] = []
    for r, p in kg.neighbours(cid, "is_a")[:MAX_PARENTS]:
        rels.append({"rel": "is_a", "id": p, "name": kg.names[kg.index[p]]})
    other = [(r, o, "out") for r, o in kg.neighbours(cid, direction="out") if r != "is_a"]
    for r, o in kg.neighbours(cid, direction="in"):
        if r == "is_a":
            continue
        if r == "has_phenotype":
            # a disease having this finding is relevant when mentioned, or when it has MIN_SHARED other findings
            shared = sum(1 for _, ph in kg.neighbours(o, "has_phenotype") if ph in linked and ph != cid)
            if o not in linked and shared < MIN_SHARED:
                continue
            other.append((r, o, "in", -shared))
            continue
        other.append((r, o, "in"))
    # mentioned neighbours first, then diseases sharing the most findings, then as stored
    other.sort(key=lambda x: (x[1] not in linked, x[3] if len(x) > 3 else 0))
    for x in other[:MAX_RELATED]:
        r, o, d = x[0], x[1], x[2]
        label = r if d == "out" else {"has_phenotype": "phenotype_of", "xref": "xref_from"}.get(r, f"inverse_{r}")
        rels.append({"rel": label, "id": o, "name": kg.names[kg.index[o]]})
    return rels


def _render(kg, c: dict, rels: list[dict[str, str]]) -> str:
    parts = []
    if c["definition"]:
        parts.append(f"Definition: {c['definition']}")
    parents = [f"{r['name']} ({r['id']})" for r in rels if r["rel"] == "is_a"]
    if parents:
        parts.append("Is a: " + "; ".join(parents) + ".")
    groups: dict[str, list[str]] = defaultdict(list)
    for r in rels:
        if r["rel"] != "is_a":
            groups[r["rel"]].append(f"{r['name']} ({r['id']})")
    label = {"has_phenotype": "Phenotypes", "phenotype_of": "Feature of", "xref": "Same as / mapped to",
             "xref_from": "Mapped from"}
    for rel, items in groups.items():
        parts.append(f"{label.get(rel, rel.replace('_', ' ').capitalize())}: " + "; ".join(items) + ".")
    if c["synonyms"]:
        parts.append("Synonyms: " + ", ".join(c["synonyms"][:5]) + ".")
    codes = [f"{v}:{cs[0]}" for v, cs in c["xrefs"].items() if v not in (c["source"], "HP") and cs][:4]
    if codes:
        parts.append("Codes: " + ", ".join(codes) + ".")
    text = " ".join(parts) or c["name"]
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1].rstrip() + "…"
