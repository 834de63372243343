"""One node schema for every knowledge source.

Every node of a ragmed concept graph (a ``networkx.MultiDiGraph``) has these attributes:

``id``          the node key: ``C0032285`` (UMLS CUI), ``DOID:552``, ``SYMP:0000614``, ``HP:0002090``,
                ``MSH:D011014``, ``ICD10CM:J18.9``, ``OMIM:620032``, ``ORPHA:79``
``name``        preferred name
``source``      the vocabulary it came from: ``UMLS``, ``DOID``, ``SYMP``, ``HPO``, ``MSH``, ``ICD10CM`` (an OBO file
                of another ontology uses its id prefix)
``synonyms``    list of other names (no duplicates of ``name``)
``definition``  text or ""
``types``       semantic types, as UMLS semantic type names (``Disease or Syndrome``, ``Finding`` …)
``xrefs``       dict vocabulary → list of codes, vocabularies normalised by :func:`xref_vocab`:
                ``UMLS`` (CUIs), ``MSH``, ``ICD10CM``, ``ICD10``, ``ICD9CM``, ``SNOMEDCT``, ``DOID``, ``HP``, ``NCI``,
                ``OMIM``, ``ORPHA`` …
``cui``         the UMLS CUI the source maps the concept to (the first listed when it gives several; else ``None``)

Edges carry ``rel``: ``is_a`` (child → parent), ``has_phenotype`` (disease → HPO term), ``xref`` (a source's
cross-reference to a node of another source in the same graph), or, for UMLS, the MRREL ``RELA`` (else ``REL``).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

# UMLS semantic group "Disorders" (DISO): the semantic types the linker reports by default.
DISORDER_TYPES = {
    "T020": "Acquired Abnormality", "T190": "Anatomical Abnormality", "T049": "Cell or Molecular Dysfunction",
    "T019": "Congenital Abnormality", "T047": "Disease or Syndrome", "T050": "Experimental Model of Disease",
    "T033": "Finding", "T037": "Injury or Poisoning", "T048": "Mental or Behavioral Dysfunction",
    "T191": "Neoplastic Process", "T046": "Pathologic Function", "T184": "Sign or Symptom",
}
# besides disorders, the linker reports anatomy, imaging procedures, planes/views, devices and contrast agents
# (the hand-written radiology vocabulary, ``radiology.py``); evaluations of findings keep to DISORDER_TYPES
CONTEXT_TYPES = {"T023": "Body Part, Organ, or Organ Component", "T060": "Diagnostic Procedure",
                 "T082": "Spatial Concept", "T074": "Medical Device", "T121": "Pharmacologic Substance"}
DEFAULT_LINK_TYPES = frozenset(DISORDER_TYPES.values()) | frozenset(CONTEXT_TYPES.values())
FINDING_TYPES = frozenset(DISORDER_TYPES.values())

# xref prefixes as sources write them → one vocabulary name
_VOCAB_ALIASES = {
    "UMLS_CUI": "UMLS", "UMLS": "UMLS", "CUI": "UMLS", "UMLSCUI": "UMLS",
    "MESH": "MSH", "MSH": "MSH", "MESHID": "MSH",
    "ICD10CM": "ICD10CM", "ICD10": "ICD10", "ICD10WHO": "ICD10", "ICD-10": "ICD10", "ICD-10-CM": "ICD10CM",
    "ICD9CM": "ICD9CM", "ICD9": "ICD9CM", "ICD-9-CM": "ICD9CM",
    "SNOMEDCT": "SNOMEDCT", "SNOMEDCT_US": "SNOMEDCT", "SCTID": "SNOMEDCT", "SNOMED": "SNOMEDCT", "SNOMEDCT_ID": "SNOMEDCT",
    "DOID": "DOID", "HP": "HP", "HPO": "HP", "OMIM": "OMIM", "MIM": "OMIM", "ORPHA": "ORPHA", "ORDO": "ORPHA",
    "ORPHANET": "ORPHA", "NCI": "NCI", "NCIT": "NCI", "SYMP": "SYMP", "RADLEX": "RADLEX", "MEDDRA": "MDR",
}
_VERSION_SUFFIX = re.compile(r"[_-]\d{4}([_-]\d{2}){0,2}$")
CUI_RE = re.compile(r"^C\d{7}$")

# prefix of node ids per vocabulary (a node "MSH:D011014" is the MeSH descriptor D011014)
ID_PREFIX = {"MSH": "MSH", "ICD10CM": "ICD10CM", "DOID": "DOID", "HP": "HP", "SYMP": "SYMP", "OMIM": "OMIM",
             "ORPHA": "ORPHA"}


def xref_vocab(prefix: str) -> str:
    """Normalise an xref prefix: ``SNOMEDCT_US_2016_03_01`` → ``SNOMEDCT``, ``UMLS_CUI`` → ``UMLS``, ``MESH`` → ``MSH``."""
    p = prefix.strip()
    up = _VERSION_SUFFIX.sub("", p.upper())
    return _VOCAB_ALIASES.get(up, up)


def parse_xref(xref: str) -> tuple[str, str] | None:
    """``"MESH:D006394"`` → ``("MSH", "D006394")``; ``"UMLS_CUI:C0018923"`` → ``("UMLS", "C0018923")``."""
    x = xref.strip().split(" ", 1)[0]
    if ":" not in x:
        return None
    prefix, code = x.split(":", 1)
    code = code.strip()
    if not prefix or not code:
        return None
    return xref_vocab(prefix), code


def node_id_for(vocab: str, code: str) -> str | None:
    """The graph node id a cross-reference points to (if that vocabulary's nodes use a prefix)."""
    if vocab == "UMLS":
        return code
    pre = ID_PREFIX.get(vocab)
    return f"{pre}:{code}" if pre else None


def concept(id: str, name: str, source: str, *, synonyms: Iterable[str] = (), definition: str = "",
            types: Iterable[str] = (), xrefs: dict[str, Iterable[str]] | None = None) -> dict[str, Any]:
    """Node attributes in the common schema (deduplicated synonyms; ``cui`` derived from the UMLS xrefs)."""
    name = (name or "").strip()
    seen = {name.casefold()}
    syns = []
    for s in synonyms:
        s = (s or "").strip()
        if s and s.casefold() not in seen:
            seen.add(s.casefold())
            syns.append(s)
    xr: dict[str, list[str]] = {}
    for vocab, codes in (xrefs or {}).items():
        for c in codes:
            if c and c not in xr.setdefault(vocab, []):
                xr[vocab].append(c)
    xr = {k: v for k, v in xr.items() if v}
    cuis = xr.get("UMLS", [])
    cui = id if CUI_RE.match(id) else (cuis[0] if cuis else None)
    return {"id": id, "name": name, "source": source, "synonyms": syns, "definition": (definition or "").strip(),
            "types": list(dict.fromkeys(types)), "xrefs": xr, "cui": cui}
