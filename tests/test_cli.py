"""The ragmed command: build, info, ask (text and JSON), clear one-line errors, the demo."""
from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from ragmed.cli import main
from tests.corpus_utils import png_corpus


def test_build_info_ask_json(tmp_path):
    manifest = png_corpus(tmp_path / "c", 8)
    r = CliRunner().invoke(main, ["index", "build", "--corpus", str(manifest), "--out", str(tmp_path / "idx"), "-q"])
    assert r.exit_code == 0, r.output
    assert "8 cases, 8 images" in r.output
    r = CliRunner().invoke(main, ["index", "info", str(tmp_path / "idx"), "--json"])
    info = json.loads(r.output)
    assert info["n_cases"] == 8 and info["encoders"]["text"]["id"] == "minilm"
    r = CliRunner().invoke(main, ["ask", str(tmp_path / "c" / "img1.png"), "Is there a pleural effusion?",
                                  "--index", str(tmp_path / "idx"), "--json"])
    assert r.exit_code == 0, r.output
    a = json.loads(r.output)
    assert a["schema"] == 1 and "not a diagnosis" in a["intended_use"]
    assert a["evidence"] and all(e["ref"] == f"[{i + 1}]" for i, e in enumerate(a["evidence"]))
    given = {e["ref"] for e in a["evidence"]} | {k["ref"] for k in a["knowledge"]}
    assert a["citations"] and set(a["citations"]) <= given
    assert any(c in {e["ref"] for e in a["evidence"]} for c in a["citations"])
    assert a["evidence"][0]["case_id"] == "case1"  # the image itself is indexed: its case ranks first
    assert a["selection"]["rule"] == "fixed" and len(a["evidence"]) == 5  # the default pipeline keeps the top 5
    # no question: refused, unless a report is asked for explicitly (the same rule as the API and the service)
    r = CliRunner().invoke(main, ["ask", str(tmp_path / "c" / "img1.png"), "--index", str(tmp_path / "idx")])
    assert r.exit_code != 0 and "the question is empty" in r.output
    r = CliRunner().invoke(main, ["ask", str(tmp_path / "c" / "img1.png"), "--task", "report", "--index",
                                  str(tmp_path / "idx"), "--json"])
    assert r.exit_code == 0, r.output
    a = json.loads(r.stdout)  # stderr may carry the fallback model's one-time conversion notice
    assert a["question"] == "" and a["evidence"] and a["answer"]
    r = CliRunner().invoke(main, ["ask", str(tmp_path / "c" / "img1.png"), "Is there a pleural effusion?",
                                  "--task", "summary", "--index", str(tmp_path / "idx")])
    assert r.exit_code == 2 and "'summary' is not one of 'closed', 'open', 'report'" in r.output


def test_errors_are_one_line(tmp_path):
    r = CliRunner().invoke(main, ["ask", str(tmp_path / "none.dcm"), "q?", "--index", str(tmp_path / "noindex")])
    assert r.exit_code == 1
    assert "Traceback" not in r.output and "index directory not found" in r.output
    (tmp_path / "bad.yaml").write_text("name: x\nretrieval: {top_kk: 3}\n")
    r = CliRunner().invoke(main, ["index", "build", "--corpus", str(png_corpus(tmp_path / "c", 2)),
                                  "--pipeline", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "i")])
    assert r.exit_code == 1 and "retrieval.top_kk: unknown field" in r.output


def test_console_script_verbose_shows_traceback(tmp_path):
    exe = [sys.executable, "-m", "ragmed.cli"]
    p = subprocess.run(exe + ["index", "info", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 1 and "Error:" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run(exe + ["--verbose", "index", "info", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 1 and "Traceback" in p.stderr


def test_import_ragmed_is_light():
    code = "import sys, ragmed, ragmed.cli, ragmed.config; print('torch' in sys.modules, 'faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
