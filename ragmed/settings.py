"""Settings from the environment: the one place that reads each ``RAGMED_*`` variable.

``settings()`` reads the environment when called (so a changed variable — a test's ``monkeypatch.setenv`` — is seen
by the next call) and returns a frozen :class:`Settings`. A value that does not parse falls back to its default.
A leaf module: it imports nothing from ragmed.

| variable | field | default |
| --- | --- | --- |
| ``RAGMED_CACHE`` | ``cache_root`` | ``~/.cache/ragmed`` |
| ``RAGMED_KG`` | ``knowledge_graph`` | None (the bundled ``knowledge/open-default``) |
| ``RAGMED_THREADS`` | ``threads`` | 0 (the usable CPU count) |
| ``RAGMED_DECODE_TIMEOUT`` | ``decode_timeout_s`` | 60 s per frame |
| ``RAGMED_DECODE_MEMORY_MB`` | ``decode_memory_mb`` | 4096 MB address space for the isolated decoder |
| ``RAGMED_BENCH_CACHE`` | ``bench_cache`` | None (``eval/.cache`` in the repository) |
| ``RAGMED_DATA`` | ``data`` | ``../shared/data`` beside the repository (benchmarks and tests) |
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INDEX = Path("indexes/default")  # what `ragmed index build`, `ask`, `index info` and `serve` use by default
DEFAULT_DECODE_TIMEOUT_S = 60.0
DEFAULT_DECODE_MEMORY_MB = 4096


@dataclass(frozen=True)
class Settings:
    cache_root: Path
    knowledge_graph: Path | None
    threads: int
    decode_timeout_s: float
    decode_memory_mb: int
    bench_cache: Path | None
    data: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        return cls(
            cache_root=Path(env.get("RAGMED_CACHE") or Path.home() / ".cache" / "ragmed"),
            knowledge_graph=Path(env["RAGMED_KG"]) if env.get("RAGMED_KG") else None,
            threads=_num(env.get("RAGMED_THREADS"), int, 0),
            decode_timeout_s=_num(env.get("RAGMED_DECODE_TIMEOUT"), float, DEFAULT_DECODE_TIMEOUT_S),
            decode_memory_mb=_num(env.get("RAGMED_DECODE_MEMORY_MB"), int, DEFAULT_DECODE_MEMORY_MB),
            bench_cache=Path(env["RAGMED_BENCH_CACHE"]) if env.get("RAGMED_BENCH_CACHE") else None,
            data=Path(env.get("RAGMED_DATA") or REPO.parent / "shared" / "data"),
        )


def _num(value: str | None, kind, default):
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except ValueError:
        return default


def settings() -> Settings:
    """The current settings (read from the environment now)."""
    return Settings.from_env()


__all__ = ["Settings", "settings", "DEFAULT_INDEX"]
