"""The edges a newcomer meets first (issue 11): each friction point found by trying ragmed as a new user, held here."""
from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from ragmed.cli import LAZY_GROUPS, main
from ragmed.corpus import read_corpus
from ragmed.errors import CorpusError, IndexStoreError
from ragmed.settings import DEFAULT_INDEX
from tests.corpus_utils import png_corpus, write_manifest

OTHER_ISSUES = ("kg", "serve", "align")  # command groups other issues are changing (K, G, E)


def _commands():
    import importlib

    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            for n in cmd.list_commands(None):
                yield from walk(cmd.get_command(None, n), [*path, n])
        else:
            yield " ".join(path), cmd

    for name, (mod, attr, _) in LAZY_GROUPS.items():
        if name in OTHER_ISSUES or importlib.util.find_spec(mod) is None:
            continue
        yield from walk(getattr(importlib.import_module(mod), attr), [name])


def test_a_manifest_with_an_image_path_column_is_an_error_naming_the_fix(tmp_path):
    m = write_manifest(tmp_path / "m.csv", [{"id": "a", "image_path": "a.png", "report": "normal chest"}])
    with pytest.raises(CorpusError, match=r"'image_path' looks like image paths.*--column image=image_path"):
        read_corpus(m)
    assert len(read_corpus(m, columns={"image": ""})) == 1  # text-only, as asked
    r = CliRunner().invoke(main, ["index", "build", "--corpus", str(m), "--out", str(tmp_path / "idx"), "-q"])
    assert r.exit_code == 1 and "--column image=image_path" in r.output
    assert not (tmp_path / "idx" / "current").exists()


def test_an_unbalanced_quote_is_reported_not_merged_silently(tmp_path):
    lines = ["id,image,report"] + [f"c{i},,Report {i} is normal." for i in range(10)]
    lines[4] = 'c3,,"Report 3 opens a quote it never closes'
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    c = read_corpus(tmp_path / "m.csv")
    assert [x.id for x in c] == ["c0", "c1", "c2"]
    (skip,) = c.skipped
    assert skip.row == 4 and "unbalanced quote" in skip.reason and "lines 5–11" in skip.reason
    assert "c4" in skip.reason
    # a legitimately quoted multi-line report is still one row, not an error
    (tmp_path / "ok.csv").write_text('id,image,report\na,,"FINDINGS: clear.\nIMPRESSION: normal."\nb,,fine\n')
    ok = read_corpus(tmp_path / "ok.csv")
    assert [x.id for x in ok] == ["a", "b"] and not ok.skipped


def test_every_command_defaults_to_the_same_index():
    defaults = {}
    for name, cmd in _commands():
        for p in cmd.params:
            if p.name in ("out", "index_dir", "directory") and name in ("index build", "ask", "index info"):
                defaults[name] = p.default
    assert defaults == {"index build": str(DEFAULT_INDEX), "ask": str(DEFAULT_INDEX),
                        "index info": str(DEFAULT_INDEX)}


def test_verbose_works_after_the_subcommand(tmp_path):
    missing = str(tmp_path / "nope")
    quiet = CliRunner().invoke(main, ["index", "info", missing])
    assert quiet.exit_code == 1 and "index directory not found" in quiet.output and quiet.exception is not None
    for args in (["-v", "index", "info", missing], ["index", "info", missing, "-v"],
                 ["index", "info", "--verbose", missing]):
        r = CliRunner().invoke(main, args)
        assert isinstance(r.exception, IndexStoreError), args  # verbose: the error itself, with its traceback


def test_every_option_has_help():
    missing = [f"{name} {'/'.join(p.opts)}" for name, cmd in _commands() for p in cmd.params
               if isinstance(p, click.Option) and not p.hidden and not p.help]
    assert missing == []


def test_build_says_what_it_does_at_once_and_no_fit_flag_skips_the_fit(tmp_path, text_encoder):
    """`--no-fit` overrides `index.fit_image_encoder: true`; the build announces itself before the slow part; no
    `.fit/` work folder is left beside the index."""
    import yaml

    m = png_corpus(tmp_path / "c", 6)
    cfg = {"encoders": {"text": {"name": "minilm"}, "image": {"name": "ragmed-default"}},
           "index": {"fit_image_encoder": True, "fit_epochs": 1, "fit_min_steps": 2}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(main, ["index", "build", "--corpus", str(m), "--pipeline", str(tmp_path / "p.yaml"),
                                  "--out", str(tmp_path / "idx"), "--no-fit"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"building {tmp_path / 'idx'} from {m}: 6 cases")
    man = json.loads((tmp_path / "idx" / "current" / "manifest.json").read_text())
    assert "model_dir" not in man["encoders"]["image"] and not man["encoders"]["image"]["id"].startswith(
        "ragmed-default-fit")
    assert (tmp_path / "idx" / "current" / "retrieval_calibration.json").exists()
    assert not (tmp_path / "idx" / ".fit").exists()
