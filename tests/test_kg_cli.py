"""``ragmed kg build | info | lookup | link`` through click's CliRunner, on real ontology samples."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ragmed.cli import main
from tests.conftest import data_path

CONCEPT_KEYS = ["id", "name", "source", "cui", "span", "negated", "score"]


@pytest.fixture(scope="module")
def doid_dir(tmp_path_factory):
    obo = data_path("ontology", "doid", "doid_2016-09-01.obo")
    out = tmp_path_factory.mktemp("kgcli") / "doid"
    r = CliRunner().invoke(main, ["kg", "build", "--source", f"obo:{obo}", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "6971 concepts" in r.output and "with a UMLS CUI" in r.output
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
    assert c == {"id": "DOID:552", "name": "pneumonia", "source": "DOID", "cui": "C0032285", "span": [3, 12],
                 "negated": True, "score": 1.0}
    ids = [x["id"] for x in objs[2]["concepts"]]
    assert ids == ["DOID:552", "DOID:3083"] and not any(x["negated"] for x in objs[2]["concepts"])
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
    assert objs[2]["concepts"][0]["id"] == "DOID:399" and objs[2]["concepts"][0]["negated"] is False


def test_link_needs_exactly_one_input(doid_dir, tmp_path):
    r = CliRunner().invoke(main, ["kg", "link", "--kg", str(doid_dir)])
    assert r.exit_code == 2 and "exactly one" in r.output
    f = tmp_path / "x.txt"
    f.write_text("a")
    r = CliRunner().invoke(main, ["kg", "link", "--kg", str(doid_dir), "--file", str(f), "text"])
    assert r.exit_code == 2


def test_link_human_output_and_missing_graph(doid_dir, tmp_path):
    r = CliRunner().invoke(main, ["kg", "link", "--kg", str(doid_dir), "No tuberculosis."])
    assert r.exit_code == 0 and "DOID:399 tuberculosis" in r.output and "NEGATED" in r.output
    r = CliRunner().invoke(main, ["kg", "link", "--kg", str(tmp_path / "missing"), "x"])
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and "knowledge graph directory not found" in r.output and "kg build" in r.output


def test_info_and_lookup(doid_dir):
    r = CliRunner().invoke(main, ["kg", "info", str(doid_dir), "--json"])
    assert r.exit_code == 0
    m = json.loads(r.output)
    assert m["counts"]["nodes"] == 6971 and m["sources"][0]["name"] == "DOID"
    r = CliRunner().invoke(main, ["kg", "info", str(doid_dir)])
    assert "concepts 6971" in r.output and "source DOID" in r.output
    r = CliRunner().invoke(main, ["kg", "lookup", "--kg", str(doid_dir), "Pneumonia", "--json"])
    hits = _objects(r.output)
    assert hits[0]["id"] == "DOID:552" and hits[0]["parents"] == ["DOID:850"]
    r = CliRunner().invoke(main, ["kg", "lookup", "--kg", str(doid_dir), "DOID:3083"])
    assert "chronic obstructive pulmonary disease" in r.output and "CUI C0024117" in r.output
    r = CliRunner().invoke(main, ["kg", "lookup", "--kg", str(doid_dir), "hemangiosarcoma"])  # a synonym
    assert "DOID:0001816  angiosarcoma" in r.output
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
