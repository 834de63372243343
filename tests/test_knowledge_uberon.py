"""UBERON anatomy with UMLS CUIs in the open graph (issue 17): the vendored subset, its extraction, and the record
of which CUIs only ragmed's hand-entered radiology table states."""
from __future__ import annotations

import pytest

from tests.conftest import REPO

OBO = """format-version: 1.2
ontology: uberon/test

[Term]
id: UBERON:0002048
name: lung
def: "Respiration organ." [ORCID:1]
synonym: "pulmo" EXACT LATIN []
synonym: "lungs" RELATED []
xref: UMLS:C0024109 {source="ncithesaurus:Lung"}
xref: MESH:D008168
xref: ZFA:0000000
is_a: UBERON:0000062

[Term]
id: UBERON:0000062
name: organ
xref: UMLS:C0178784

[Term]
id: UBERON:0000001
name: no cui here
xref: FMA:1

[Term]
id: UBERON:0000002
name: obsolete thing
xref: UMLS:C0000002
is_obsolete: true

[Term]
id: ZFA:0000000
name: zebrafish lung
xref: UMLS:C0000003
"""


def test_extract_umls_terms_keeps_terms_with_cuis_only(tmp_path):
    from ragmed.knowledge.open_sources import extract_umls_terms, obo_graph

    src, out = tmp_path / "in.obo", tmp_path / "out.obo"
    src.write_text(OBO, encoding="utf-8")
    assert extract_umls_terms([src, src], out, header=["remark: test"]) == 2
    text = out.read_text(encoding="utf-8")
    assert "remark: test" in text and "ZFA:0000000" not in text.replace("id: UBERON", "")  # foreign xref dropped
    G = obo_graph(out, types=["Body Part, Organ, or Organ Component"])
    assert set(G.nodes) == {"UBERON:0002048", "UBERON:0000062"}  # no CUI / obsolete / other prefix: left out
    lung = G.nodes["UBERON:0002048"]
    assert lung["cui"] == "C0024109" and lung["xrefs"]["MSH"] == ["D008168"]
    assert lung["synonyms"] == ["pulmo"]  # EXACT only
    assert [(u, v) for u, v in G.edges()] == [("UBERON:0002048", "UBERON:0000062")]


def test_hand_entered_cui_is_recorded_unless_an_open_source_states_it():
    import networkx as nx

    from ragmed.knowledge.build import merge_concepts, resolve_xrefs
    from ragmed.knowledge.schema import concept

    body = ["Body Part, Organ, or Organ Component"]
    G = nx.MultiDiGraph()
    G.add_node("RAD:lung", **concept("RAD:lung", "lung", "RAD", types=body,
                                     xrefs={"UMLS": ["C0024109"], "MSH": ["D008168"]}))
    G.add_node("UBERON:0002048", **concept("UBERON:0002048", "lung", "UBERON", types=body,
                                           xrefs={"UMLS": ["C0024109"]}))
    G.add_node("RAD:ct", **concept("RAD:ct", "computed tomography", "RAD", types=["Diagnostic Procedure"],
                                   xrefs={"UMLS": ["C0040405"], "MSH": ["D014057"]}))
    # the descriptor receives RAD's CUI through the one-to-one MeSH xref: that does not make it an open xref
    G.add_node("MSH:D014057", **concept("MSH:D014057", "Tomography, X-Ray Computed", "MSH", xrefs={"MSH": ["D014057"]}))
    resolve_xrefs(G)
    H, _ = merge_concepts(G)
    assert H.nodes["C0024109"]["xrefs"]["UBERON"] == ["0002048"] and H.nodes["C0024109"]["name"] == "lung"
    assert H.graph["cui_hand_entered_only"] == ["C0040405"]


def test_default_graph_has_uberon_cuis_for_chest_anatomy():
    from ragmed.knowledge import default_graph_path, load_graph

    path = default_graph_path()
    if not (path / "manifest.json").exists():
        pytest.skip(f"bundled graph not built at {path}")
    kg = load_graph(path)
    src = {s["name"]: s for s in kg.manifest["sources"]}
    assert src["UBERON"]["with_cui"] == src["UBERON"]["concepts"] > 600 and "CC BY" in src["UBERON"]["licence"]
    assert (REPO / src["UBERON"]["file"]).exists()
    hand_only = set(kg.manifest["cui_hand_entered_only"])
    got = {m.text.lower(): m for m in kg.link("The heart and mediastinum are normal. The lungs are clear. "
                                              "No pleural effusion. The trachea is midline. Chest CT.")}
    for word, cui in (("heart", "C0018787"), ("mediastinum", "C0025066"), ("lungs", "C0024109"),
                      ("trachea", "C0040578")):
        assert got[word].cui == cui and cui not in hand_only, word  # an open (UBERON) xref states it
        assert "UBERON" in kg.concept(got[word].id)["xrefs"]
    assert got["ct"].cui == "C0040405" and "C0040405" in hand_only  # only ragmed's hand-entered table states it
