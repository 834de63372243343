"""The README's Python blocks and demo command blocks run as tests: a snippet that no longer runs fails here.

Every ```python / ```bash / ```yaml block carries a marker on the line before it: ``<!-- readme-test: run -->`` (run
here: bash lines starting with ``ragmed`` through the CLI, Python blocks with ``exec``) or ``<!-- readme-test: skip
(reason) -->`` (needs external weights, a corpus of your own, an installer or a running server). Unlabelled fences
are command synopses, not code. The blocks run in one temporary directory, in README order (the demo index the
command block builds is the one the Python block opens); the images a snippet names are written there first.
"""
from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"(?:<!--\s*readme-test:\s*(?P<mark>run|skip[^>]*?)\s*-->\s*\n)?```(?P<lang>python|bash|yaml)\n"
                   r"(?P<body>.*?)```", re.S)


def blocks():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return [(m.group("lang"), (m.group("mark") or "").strip(), m.group("body"), text[: m.start()].count("\n") + 1)
            for m in FENCE.finditer(text)]


def test_every_code_block_is_marked():
    unmarked = [f"README.md:{line} ({lang})" for lang, mark, _, line in blocks() if not mark]
    assert unmarked == [], "mark each block `<!-- readme-test: run -->` or `<!-- readme-test: skip (why) -->`"
    skipped = [mark for _, mark, _, _ in blocks() if mark.startswith("skip")]
    assert all(re.match(r"skip \(.+\)", m) for m in skipped), "a skipped block says why"


def _write_inputs(d: Path) -> None:
    import pydicom.data

    from tests.corpus_utils import write_png
    from tests.multidomain_utils import make_nonmedical

    shutil.copy(pydicom.data.get_testdata_file("RG1_UNCR.dcm", download=False) or "", d / "scan.dcm")
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), d / "a.dcm")
    write_png(d / "b.png", seed=3, kind=1)
    shutil.copy(make_nonmedical(d / "edge")["natural-photo"], d / "photo.jpg")
    (d / "questions.csv").write_text("id,image,question\nq1,scan.dcm,Is there a pleural effusion?\n"
                                     "q2,b.png,Is the heart enlarged?\n")


def test_readme_blocks_run(tmp_path, monkeypatch):
    pydicom = pytest.importorskip("pydicom")
    if pydicom.data.get_testdata_file("RG1_UNCR.dcm", download=False) is None:
        pytest.skip("pydicom-data is not installed (the demo's DICOM files)")
    from ragmed.cli import main

    monkeypatch.chdir(tmp_path)
    _write_inputs(tmp_path)
    ran = 0
    for lang, mark, body, line in blocks():
        if mark != "run":
            continue
        if lang == "bash":
            for cmd in body.splitlines():
                args = shlex.split(cmd, comments=True)
                if not args:
                    continue
                assert args[0] == "ragmed", f"README.md:{line}: only ragmed commands run here: {cmd!r}"
                r = CliRunner().invoke(main, args[1:])
                assert r.exit_code == 0, f"README.md:{line}: `{cmd}` failed:\n{r.output}"
        else:
            exec(compile(body, f"README.md:{line}", "exec"), {"__name__": "readme"})
        ran += 1
    assert ran >= 2
    assert (tmp_path / "indexes" / "demo" / "current" / "retrieval_calibration.json").exists()
