"""Combine sources into one concept graph and resolve the cross-references between them.

``build_graph(["open", "obo:doid.obo", "umls:/data/umls/2025AA/META"])`` returns one ``networkx.MultiDiGraph`` in
the common schema (``schema.py``). After the sources are composed:

1. Every xref that names a node present in the graph becomes an ``xref`` edge (DOID:552 → MSH:D011014,
   DOID → ICD10CM codes, DOID → UMLS CUIs when a UMLS graph is part of the build).
2. One-to-one mappings share what they know: when a concept maps to exactly one MeSH descriptor and that
   descriptor is mapped by no other concept of the same source, the two exchange names (the MeSH heading becomes a
   synonym of the DOID term and the other way round), the descriptor takes the concept's UMLS CUI and semantic types.
   A one-to-one mapping to ICD-10-CM or UMLS passes the CUI only.
3. MeSH descriptors still without a semantic type take the types of a typed concept of another source with the
   same normalised preferred name (lexical alignment, as UMLS does for exact string matches).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Iterable

from ragmed.errors import KnowledgeError
from ragmed.knowledge.schema import node_id_for
from ragmed.knowledge.text import normalise

log = logging.getLogger(__name__)

SOURCE_SPECS = "open | icd10cm | hpo | mesh | radiology | uberon | obo:FILE | umls:DIR"
# the order in which a merged concept takes its preferred name, source and definition
MERGE_PRIORITY = ("UMLS", "DOID", "HPO", "SYMP", "RAD", "UBERON", "MSH", "ICD10CM")
# xref vocabularies whose one-to-one mappings name the same concept (merged); ICD-10-CM categories are broader
MERGE_VOCABS = ("MSH",)
NAME_ALIGNED = ("MSH", "RAD")  # sources aligned to the ontologies by exact name (they carry no CUIs of their own)
HAND_CUI_SOURCES = ("RAD",)  # sources whose CUIs ragmed entered by hand (radiology.CUIS), not an open cross-reference
DERIVED_CUI_SOURCES = ("MSH",)  # sources that state no CUI themselves (theirs come from a mapping concept)


def _radiology(mesh):
    from ragmed.knowledge.radiology import radiology_graph

    return radiology_graph({d["name"]: n.split(":", 1)[1] for n, d in mesh.nodes(data=True)})


def load_source(spec: str, **umls_options):
    """One source spec → a graph. ``open`` = ICD-10-CM + HPO (with diseases) + MeSH + radiology vocabulary + UBERON
    anatomy (the terms with UMLS CUIs)."""
    from ragmed.knowledge import open_sources as osrc

    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "open":
        mesh = osrc.mesh_graph()
        return [osrc.icd10cm_graph(), osrc.hpo_graph(), mesh, _radiology(mesh), osrc.uberon_graph()]
    if kind == "uberon":
        return [osrc.uberon_graph()]
    if kind == "radiology":
        return [_radiology(osrc.mesh_graph())]
    if kind == "icd10cm":
        return [osrc.icd10cm_graph()]
    if kind == "hpo":
        return [osrc.hpo_graph()]
    if kind == "mesh":
        return [osrc.mesh_graph()]
    if kind == "obo" and arg:
        return [osrc.obo_graph(arg)]
    if kind == "umls" and arg:
        from ragmed.knowledge.umls import load_umls

        return [load_umls(arg, **umls_options)]
    raise KnowledgeError(f"unknown knowledge source {spec!r}", remedy=f"use one of: {SOURCE_SPECS}")


def compose(graphs: Iterable):
    """Union of graphs; a node present in several (same id) keeps the first non-empty value of every field and the
    union of synonyms, types and xrefs."""
    import networkx as nx

    G = nx.MultiDiGraph()
    sources: list[dict] = []
    report: dict = {}
    for g in graphs:
        sources.extend(g.graph.get("sources", []))
        report.update(g.graph.get("report", {}))
        for n, d in g.nodes(data=True):
            if n not in G:
                G.add_node(n, **d)
                continue
            cur = G.nodes[n]
            for k in ("name", "definition", "cui"):
                if not cur.get(k) and d.get(k):
                    cur[k] = d[k]
            for k in ("synonyms", "types"):
                cur[k] = list(dict.fromkeys([*cur.get(k, []), *d.get(k, [])]))
            for vocab, codes in d.get("xrefs", {}).items():
                cur.setdefault("xrefs", {}).setdefault(vocab, [])
                cur["xrefs"][vocab] = list(dict.fromkeys([*cur["xrefs"][vocab], *codes]))
        G.add_edges_from(g.edges(keys=True, data=True))
    G.graph["sources"] = sources
    if report:
        G.graph["report"] = report
    return G


def _add_names(dst: dict, names: Iterable[str]) -> None:
    seen = {dst["name"].casefold(), *(s.casefold() for s in dst["synonyms"])}
    for s in names:
        if s and s.casefold() not in seen:
            seen.add(s.casefold())
            dst["synonyms"].append(s)


def resolve_xrefs(G) -> dict[str, int]:
    """Steps 1–3 of the module docstring, in place. Returns counts."""
    stats = defaultdict(int)
    # who maps to whom: (target, source of the mapping concept) -> [concepts]
    mapped_by: dict[tuple[str, str], list[str]] = defaultdict(list)
    links: list[tuple[str, str, str]] = []
    for n, d in G.nodes(data=True):
        for vocab, codes in d.get("xrefs", {}).items():
            for code in codes:
                t = node_id_for(vocab, code)
                if t is None or t == n or t not in G:
                    continue
                links.append((n, t, vocab))
                mapped_by[(t, d["source"])].append(n)
    for n, t, vocab in links:
        G.add_edge(n, t, rel="xref")
        stats["xref_edges"] += 1
    for n, t, vocab in links:
        d, td = G.nodes[n], G.nodes[t]
        if len(d["xrefs"].get(vocab, [])) != 1 or len(mapped_by[(t, d["source"])]) != 1:
            continue  # not one-to-one
        if d.get("cui") and not td.get("cui"):
            td["cui"] = d["cui"]
            td["xrefs"].setdefault("UMLS", []).append(d["cui"])
            stats["cui_shared"] += 1
        if vocab == "MSH":
            _add_names(d, [td["name"], *td["synonyms"]])
            _add_names(td, [d["name"], *d["synonyms"]])
            if not td.get("types") and d.get("types"):
                td["types"] = list(d["types"])
                stats["mesh_typed_by_xref"] += 1
            stats["names_shared"] += 1
    # 3. lexical typing of untyped MeSH descriptors
    typed_by_name: dict[str, list[str]] = {}
    for n, d in G.nodes(data=True):
        if d.get("source") != "MSH" and d.get("types") and "Classification" not in d["types"]:
            typed_by_name.setdefault(normalise(d["name"]), d["types"])
    for n, d in G.nodes(data=True):
        if d.get("source") == "MSH" and not d.get("types"):
            for name in (d["name"], *d["synonyms"]):
                tys = typed_by_name.get(normalise(name))
                if tys:
                    d["types"] = list(tys)
                    stats["mesh_typed_by_name"] += 1
                    break
    return dict(stats)


def build_graph(specs: Iterable[str], *, merge: bool = True, **umls_options):
    """Build a graph from source specs (``open``, ``obo:FILE``, ``umls:DIR`` …), xrefs resolved and (``merge``)
    concepts that share a CUI or an exact one-to-one xref merged into one node (see :func:`merge_concepts`)."""
    graphs = []
    for spec in specs:
        graphs.extend(load_source(spec, **umls_options))
    if not graphs:
        raise KnowledgeError("no knowledge source given", remedy=f"use --source with one of: {SOURCE_SPECS}")
    for g in graphs:  # per-source sizes, before merging
        for src in g.graph.get("sources", []):
            src["concepts"] = g.number_of_nodes()
            src["synonyms"] = sum(len(d.get("synonyms", [])) for _, d in g.nodes(data=True))
            src["with_cui"] = sum(1 for _, d in g.nodes(data=True) if d.get("cui"))
    G = compose(graphs)
    stats = resolve_xrefs(G)
    if merge:
        G, mstats = merge_concepts(G)
        stats.update(mstats)
    G.graph["xref_stats"] = stats
    G.graph["specs"] = list(specs)
    return G


def _prio(d: dict) -> int:
    s = d.get("source")
    return MERGE_PRIORITY.index(s) if s in MERGE_PRIORITY else len(MERGE_PRIORITY)


def merge_concepts(G):
    """One node per concept: nodes that share a UMLS CUI, that map one-to-one to each other by an exact MeSH xref,
    or (a MeSH descriptor) whose heading is, after normalisation, the name or EXACT synonym of exactly one concept of
    another typed source, become one node. Its id is the CUI when any member has one (else the id of the member
    first in ``MERGE_PRIORITY``); it takes that member's name, source and definition, the union of all names,
    types and xrefs, and every member's edges. ``G.graph["aliases"]`` maps each former id to the new one, so that
    ``kg.concept("HP:0002107")`` still finds the merged node. ``G.graph["cui_hand_entered_only"]`` lists the merged
    nodes whose CUI only a hand-entered source (``HAND_CUI_SOURCES``) states: no member of an ontology source
    carries it among its own UMLS xrefs. Returns (new graph, counts)."""
    import networkx as nx

    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    stats: dict[str, int] = defaultdict(int)
    by_cui: dict[str, str] = {}
    for n, d in G.nodes(data=True):
        c = d.get("cui")
        if c:
            if c in by_cui:
                union(by_cui[c], n)
                stats["merged_by_cui"] += 1
            else:
                by_cui[c] = n
    # one-to-one exact xrefs
    mapped_by: dict[tuple[str, str], list[str]] = defaultdict(list)
    pairs = []
    for n, d in G.nodes(data=True):
        for vocab in MERGE_VOCABS:
            codes = d.get("xrefs", {}).get(vocab, [])
            t = node_id_for(vocab, codes[0]) if len(codes) == 1 else None
            if t and t != n and t in G and G.nodes[t]["source"] != d["source"]:
                mapped_by[(t, d["source"])].append(n)
                pairs.append((n, t, d["source"]))
    for n, t, src in pairs:
        if len(mapped_by[(t, src)]) == 1:
            union(t, n)
            stats["merged_by_xref"] += 1
    # exact-name alignment: a MeSH descriptor that no source maps, or an entry of ragmed's radiology vocabulary,
    # whose preferred name is the name or EXACT synonym of exactly one typed concept of an ontology source
    names: dict[str, set[str]] = defaultdict(set)
    for n, d in G.nodes(data=True):
        if d.get("source") in NAME_ALIGNED or d.get("source") == "ICD10CM" or not d.get("types") \
                or "Classification" in d["types"]:
            continue
        for s in (d["name"], *d.get("synonyms", [])):
            names[normalise(s)].add(n)
    mapped = {t for t, _ in mapped_by}
    for n, d in G.nodes(data=True):
        if d.get("source") not in NAME_ALIGNED or n in mapped:
            continue
        hits = names.get(normalise(d["name"]), set())
        if len(hits) == 1:
            union(next(iter(hits)), n)
            stats["merged_by_name"] += 1
    groups: dict[str, list[str]] = defaultdict(list)
    for n in G.nodes:
        groups[find(n)].append(n)
    H = nx.MultiDiGraph()
    H.graph.update(G.graph)
    new_id: dict[str, str] = {}
    used: set[str] = set()
    hand_only: list[str] = []
    for members in groups.values():
        members.sort(key=lambda m: (_prio(G.nodes[m]), m))
        ds = [G.nodes[m] for m in members]
        cui = next((d["cui"] for d in ds if d.get("cui")), None)
        nid = cui if cui and cui not in used else members[0]
        used.add(nid)
        head = ds[0]
        syns: list[str] = []
        seen = {head["name"].casefold()}
        for d in ds:
            for s in (d["name"], *d.get("synonyms", [])):
                if s and s.casefold() not in seen:
                    seen.add(s.casefold())
                    syns.append(s)
        xrefs: dict[str, list[str]] = {}
        for m, d in zip(members, ds):
            own = {} if ":" not in m else {m.split(":", 1)[0]: [m.split(":", 1)[1]]}
            for vocab, codes in [*d.get("xrefs", {}).items(), *own.items()]:
                cur = xrefs.setdefault(vocab, [])
                cur.extend(c for c in codes if c not in cur)
        types = list(dict.fromkeys(t for d in ds for t in d.get("types", [])))
        if len(types) > 1 and "Classification" in types:
            types.remove("Classification")
        H.add_node(nid, id=nid, name=head["name"], source=head["source"], synonyms=syns,
                   definition=next((d["definition"] for d in ds if d.get("definition")), ""), types=types,
                   xrefs=xrefs, cui=cui)
        if cui and not any(d["source"] not in (*HAND_CUI_SOURCES, *DERIVED_CUI_SOURCES)
                           and cui in d.get("xrefs", {}).get("UMLS", []) for d in ds):
            hand_only.append(nid)
        for m in members:
            new_id[m] = nid
        if len(members) > 1:
            stats["merged_nodes"] += len(members) - 1
    seen_edges = set()
    for u, v, d in G.edges(data=True):
        a, b, r = new_id[u], new_id[v], d.get("rel", "related_to")
        if a == b or (a, b, r) in seen_edges:
            continue
        seen_edges.add((a, b, r))
        H.add_edge(a, b, rel=r)
    H.graph["aliases"] = {old: new for old, new in new_id.items() if old != new}
    H.graph["cui_hand_entered_only"] = sorted(hand_only)
    return H, dict(stats)
