"""ragmed.settings: each RAGMED_* variable read in one place, parsed with a fallback."""
from __future__ import annotations

from pathlib import Path

from ragmed.settings import DEFAULT_DECODE_TIMEOUT_S, Settings, settings


def test_each_variable_reaches_its_field(tmp_path):
    s = Settings.from_env({"RAGMED_CACHE": str(tmp_path / "c"), "RAGMED_KG": str(tmp_path / "kg"),
                           "RAGMED_THREADS": "3", "RAGMED_DECODE_TIMEOUT": "2.5", "RAGMED_DECODE_MEMORY_MB": "512",
                           "RAGMED_BENCH_CACHE": str(tmp_path / "b"), "RAGMED_DATA": str(tmp_path / "d")})
    assert (s.cache_root, s.knowledge_graph, s.threads) == (tmp_path / "c", tmp_path / "kg", 3)
    assert (s.decode_timeout_s, s.decode_memory_mb) == (2.5, 512)
    assert (s.bench_cache, s.data) == (tmp_path / "b", tmp_path / "d")


def test_defaults_and_unparsable_values():
    s = Settings.from_env({"RAGMED_THREADS": "many", "RAGMED_DECODE_TIMEOUT": ""})
    assert s.threads == 0 and s.decode_timeout_s == DEFAULT_DECODE_TIMEOUT_S
    assert s.knowledge_graph is None and s.bench_cache is None
    assert s.cache_root == Path.home() / ".cache" / "ragmed"


def test_read_when_called(monkeypatch, tmp_path):
    from ragmed.io import _isolate
    from ragmed.paths import cache_dir

    monkeypatch.setenv("RAGMED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAGMED_DECODE_TIMEOUT", "7")
    assert settings().cache_root == tmp_path / "cache"
    assert cache_dir("x") == tmp_path / "cache" / "x" and (tmp_path / "cache" / "x").is_dir()
    assert _isolate.timeout_s() == 7.0
