"""``ragmed kg build | info | lookup | link`` through click's CliRunner, on real ontology samples."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ragmed.cli import main
from tests.conftest import data_path

CONCEPT_KEYS = ["id", "name", "source", "cui", "span", "negated", "uncertain", "score", "types", "method", "reason"]


@pytest.fixture(scope="module")
def doid_dir(tmp_path_factory):
    obo = data_path("ontology", "doid", "doid_2016-09-01.obo")
    out = tmp_path_factory.mktemp("kgcli") / "doid"
    r = CliRunner().invoke(main, ["kg", "build", "--source", f"obo:{obo}", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "with a UMLS CUI" in r.output
    m = json.loads((out / "manifest.json").read_text())
    # 6,971 DOID terms; those that share a UMLS CUI are merged into one node (keyed by the CUI)
    assert m["counts"]["nodes"] + m["xref_stats"]["merged_nodes"] == 6971 and m["counts"]["aliases"] > 5000
    return out


def _objects(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines()]


def test_link_json_one_object_per_line_in_order(doid_dir):
    text = "No pneumonia.\n\nRight lower lobe pneumonia and COPD.\n   \nNothing here"
    r = CliRunner().invoke(main, ["kg", "link", "--kg", str(doid_dir), "--json", text])
    assert r.exit_code == 0, r.output
    objs = _objects(r.output)
    assert [o["text"] for o in objs] == text.split("\n")  # empty and blank lines included, input order
    assert objs[1] == {"text": "", "concepts": []} and objs[3]["concepts"] == [] and objs[4]["concepts"] == []
    c = objs[0]["concepts"][0]
    assert list(c) == CONCEPT_KEYS
    assert c == {"id": "C0032285", "name": "pneumonia", "source": "DOID", "cui": "C0032285", "span": [3, 12],
                 "negated": True, "uncertain": False, "score": 1.0, "types": ["Disease or Syndrome"],
                 "method": "exact", "reason": "only candidate"}  # a concept with a CUI is keyed by it
    ids = [x["id"] for x in objs[2]["concepts"]]
    assert ids == ["C0032285", "C0024117"] and not any(x["negated"] for x in objs[2]["concepts"])
    assert objs[2]["concepts"][1]["method"] == "abbreviation"
    s, e = objs[2]["concepts"][1]["span"]
    assert objs[2]["text"][s:e] == "COPD"


def test_link_stdin_and_file_give_the_same_lines(doid_dir, tmp_path):
    lines = ["Pleural effusion is not seen.", "", "Tuberculosis.", ""]
    f = tmp_path / "in.txt"
    f.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    runner = CliRunner()
    r1 = runner.invoke(main, ["kg", "link", "--kg", str(doid_dir), "--json", "--file", str(f)])
    r2 = runner.invoke(main, ["kg", "link", "--kg", str(doid_dir), "--json", "-"], input="\n".join(lines) + "\n")
    assert r1.exit_code == 0 and r2.exit_code == 0, (r1.output, r2.output)
    assert r1.output == r2.output
    objs = _objects(r1.output)
    assert [o["text"] for o in objs] == lines
    tb = objs[2]["concepts"][0]
    assert "399" in CliRunner().invoke(main, ["kg", "lookup", "--kg", str(doid_dir), "--json", tb["id"]]).output
    assert tb["name"] == "tuberculosis" and tb["cui"] and tb["negated"] is False


def test_link_needs_exactly_one_input(doid_dir, tmp_path):
    r = CliRunner().invoke(main, ["kg", "link", "--kg", str(doid_dir)])
    assert r.exit_code == 2 and "exactly one" in r.output
    f = tmp_path / "x.txt"
    f.write_text("a")
    r = CliRunner().invoke(main, ["kg", "link", "--kg", str(doid_dir), "--file", str(f), "text"])
    assert r.exit_code == 2


def test_link_human_output_and_missing_graph(doid_dir, tmp_path):
    r = CliRunner().invoke(main, ["kg", "link", "--kg", str(doid_dir), "No tuberculosis."])
    assert r.exit_code == 0 and "C0041295 tuberculosis (DOID CUI C0041295)" in r.output and "NEGATED" in r.output
    r = CliRunner().invoke(main, ["kg", "link", "--kg", str(tmp_path / "missing"), "x"])
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and "knowledge graph directory not found" in r.output and "kg build" in r.output


def test_info_and_lookup(doid_dir):
    r = CliRunner().invoke(main, ["kg", "info", str(doid_dir), "--json"])
    assert r.exit_code == 0
    m = json.loads(r.output)
    n = m["counts"]["nodes"]
    assert n < 6971 and m["sources"][0]["name"] == "DOID" and m["sources"][0]["concepts"] == 6971
    r = CliRunner().invoke(main, ["kg", "info", str(doid_dir)])
    assert f"concepts {n}" in r.output and "source DOID" in r.output
    r = CliRunner().invoke(main, ["kg", "lookup", "--kg", str(doid_dir), "Pneumonia", "--json"])
    hits = _objects(r.output)
    assert hits[0]["id"] == "C0032285" and hits[0]["parents"] == ["C0024115"]  # lung disease
    assert "552" in hits[0]["xrefs"]["DOID"]
    r = CliRunner().invoke(main, ["kg", "lookup", "--kg", str(doid_dir), "DOID:3083"])
    assert "chronic obstructive pulmonary disease" in r.output and "CUI C0024117" in r.output
    r = CliRunner().invoke(main, ["kg", "lookup", "--kg", str(doid_dir), "hemangiosarcoma"])  # a synonym
    assert "  angiosarcoma  [DOID" in r.output and "DOID:0001816" in r.output
    r = CliRunner().invoke(main, ["kg", "lookup", "--kg", str(doid_dir), "zzzz qqqq"])
    assert "no concept found" in r.output


def test_build_umls_from_cli_with_bad_rows(tmp_path):
    import shutil

    src = data_path("ontology", "umls-rrf-fixture")
    meta = tmp_path / "release" / "META"
    meta.mkdir(parents=True)
    for f in src.glob("*.RRF"):
        shutil.copy(f, meta / f.name)
    (meta / "MRSTY.RRF").write_text((meta / "MRSTY.RRF").read_text().rstrip("\n") + "\nC0000005|T047|\n")
    out = tmp_path / "umls"
    r = CliRunner().invoke(main, ["kg", "build", "--source", f"umls:{meta.parent}", "--out", str(out)])
    assert r.exit_code == 1 and "MRSTY.RRF: line 4" in r.output and "--skip-bad-rows" in r.output
    assert not out.exists()
    r = CliRunner().invoke(main, ["kg", "build", "--source", f"umls:{meta.parent}", "--out", str(out),
                                  "--skip-bad-rows", "--link-type", "Organic Chemical"])
    assert r.exit_code == 0, r.output
    assert "2 concepts" in r.output and "MRSTY.RRF: skipped 1 malformed row(s), e.g. 4:" in r.output
    r = CliRunner().invoke(main, ["kg", "link", "--kg", str(out), "--json", "1,2-Dipalmitoylphosphatidylcholine"])
    c = _objects(r.output)[0]["concepts"]
    assert [x["cui"] for x in c] == ["C0000039"] and c[0]["source"] == "UMLS"


def test_importing_knowledge_stays_light():
    """``import ragmed.knowledge`` (and loading + linking a graph) pulls neither torch nor faiss."""
    import subprocess
    import sys

    code = ("import sys, ragmed.knowledge; assert 'numpy' not in sys.modules and 'networkx' not in sys.modules; "
            "from ragmed.knowledge import load_graph, default_graph_path; p = default_graph_path(); "
            "kg = load_graph(p) if (p / 'manifest.json').exists() else None; kg and kg.link('no pneumothorax'); "
            "assert 'torch' not in sys.modules and 'faiss' not in sys.modules, 'heavy import'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
