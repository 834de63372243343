"""The short version of eval/fuzz_dicom.py: ~200 seeded mutations of real DICOM files through load_image."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA, REPO


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("fuzz_dicom", REPO / "eval" / "fuzz_dicom.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fuzz = _fuzz_module()


def test_mutations_are_reproducible_and_change_the_file():
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("MR_small_RLE.dcm", download=False)).read_bytes()
    out = [fuzz.mutate(data, np.random.default_rng([3, i]), [data]) for i in range(30)]
    again = [fuzz.mutate(data, np.random.default_rng([3, i]), [data]) for i in range(30)]
    assert out == again
    assert sum(d != data for d, _ in out) >= 28
    assert len({how.split("+")[0] for _, how in out}) >= 8  # many kinds of mutation


def test_short_fuzz_only_typed_errors_or_loads():
    """200 mutated files (seed 1) from real DICOM seeds: no untyped exception, crash, hang, unnamed error or PHI."""
    seed_dir = DATA / "dicom" if (DATA / "dicom").is_dir() else None  # else pydicom's own test files
    seeds = fuzz.find_seeds(seed_dir, limit=40)
    assert len(seeds) >= 20
    r = fuzz.run_fuzz(200, seed=1, seeds=seeds, timeout=120, decode_timeout=30, progress=False)
    assert sum(r["counts"].values()) == 200
    assert r["failures_total"] == 0, r["failures"]
    assert r["untyped_exceptions"] == {}
    assert r["counts"].get("loaded", 0) > 10 and r["counts"].get("typed", 0) > 50


@pytest.mark.skipif(os.name != "posix", reason="the harness uses select() on pipes")
def test_harness_replaces_a_dead_child(tmp_path):
    """A harness child that died (as after a crash) is replaced for the next file."""
    h = fuzz.Harness(dict(os.environ, PYTHONPATH=str(REPO)))
    f = tmp_path / "x.dcm"
    f.write_bytes(b"not dicom")
    assert h.load(f, tmp_path, timeout=60)["outcome"] == "typed"
    h.proc.kill()
    h.proc.wait()
    rec = h.load(f, tmp_path, timeout=60)  # a dead child is replaced
    assert rec["outcome"] == "typed"
    h.stop()
