"""The quick start's demo: real DICOM files shipped by pydicom / pydicom-data, synthetic identifiers stripped."""
from __future__ import annotations

from click.testing import CliRunner

from ragmed.cli import main
from ragmed.demo import SYNTHETIC_PHI, scan_for_phi, write_demo_corpus


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    r = CliRunner().invoke(main, ["demo", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "were NOT found in any file of the index" in r.output
    assert "0 skipped" in r.output
    assert "[1] case demo-cr-chest" in r.output  # the chest radiograph's own study is the top evidence
    answer = r.output.split("Answer", 1)[1].split("Evidence")[0]
    assert answer.strip().startswith("No [1]")  # the chest study's text negates an effusion, and is cited
    assert scan_for_phi(out) == []
    assert scan_for_phi(tmp_path / "demo-corpus" / "synthetic_phi_ct.dcm") != []  # the input really carries them
    for v in SYNTHETIC_PHI.values():
        assert v not in r.output


def test_demo_corpus_rows_are_real_files(tmp_path):
    d = write_demo_corpus(tmp_path)
    from ragmed.corpus import read_corpus

    c = read_corpus(d.manifest)
    assert len(c) == 15 and not c.skipped
    assert all("demo annotation" in case.report for case in c)
