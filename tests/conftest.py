"""Shared fixtures. Real data from ``$RAGMED_DATA`` (default ``../shared/data``); tests that need it skip with a
clear reason when it is absent. Every test gets its own home/cache directories (no writes outside tmp)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RAGMED_DATA", REPO.parent / "shared" / "data"))


def data_path(*parts: str) -> Path:
    """A path under the shared data; skips the calling test when it is not there."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not found at {p} (set RAGMED_DATA to the folder holding ragmed's dev data)")
    return p


@pytest.fixture
def shared_data() -> Path:
    return data_path()


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory) -> Path:
    """One ragmed cache per test run (in tmp): a converted model is converted once per run, not once per test."""
    return tmp_path_factory.mktemp("ragmed-cache")


@pytest.fixture(autouse=True)
def _isolated_env(_session_cache, monkeypatch):
    monkeypatch.setenv("RAGMED_CACHE", str(_session_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    yield


@pytest.fixture(scope="session")
def text_encoder():
    """The real default text encoder (all-MiniLM-L6-v2), loaded once per test run."""
    from ragmed.encoders import create_encoder

    return create_encoder("minilm")
