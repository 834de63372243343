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

SOURCE_SPECS = "open | icd10cm | hpo | mesh | obo:FILE | umls:DIR"


def load_source(spec: str, **umls_options):
    """One source spec → a graph. ``open`` = ICD-10-CM + HPO (with diseases) + MeSH."""
    from ragmed.knowledge import open_sources as osrc

    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "open":
        return [osrc.icd10cm_graph(), osrc.hpo_graph(), osrc.mesh_graph()]
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


def build_graph(specs: Iterable[str], **umls_options):
    """Build a graph from source specs (``open``, ``obo:FILE``, ``umls:DIR`` …), xrefs resolved."""
    graphs = []
    for spec in specs:
        graphs.extend(load_source(spec, **umls_options))
    if not graphs:
        raise KnowledgeError("no knowledge source given", remedy=f"use --source with one of: {SOURCE_SPECS}")
    G = compose(graphs)
    G.graph["xref_stats"] = resolve_xrefs(G)
    G.graph["specs"] = list(specs)
    return G
