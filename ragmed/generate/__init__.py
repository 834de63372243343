"""Generators: one protocol, several backends, chosen by ``generator.name`` in the pipeline YAML.

Built in: ``extractive`` (no model: composes the answer from the evidence's most relevant sentences, each cited).
Model backends (``gguf``, ``transformers``, ``openai``) register themselves from their modules.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

from ragmed.errors import ConfigError
from ragmed.types import Evidence, Generation, KnowledgeEvidence


class Generator(Protocol):
    id: str

    def warm_up(self) -> None: ...

    def generate(self, question: str, evidence: list[Evidence], knowledge: list[KnowledgeEvidence], *,
                 image=None, domain: str | None = None, task: str = "open") -> Generation: ...


_GENERATORS: dict[str, str | Callable[..., Generator]] = {
    "extractive": "ragmed.generate.extractive:ExtractiveGenerator",
    "gguf": "ragmed.generate.gguf:GGUFGenerator",
    "transformers": "ragmed.generate.hf:TransformersGenerator",
    "openai": "ragmed.generate.openai_backend:OpenAIGenerator",
    "vote": "ragmed.generate.vote:VoteGenerator",
    "ragmed-vlm": "ragmed.generate.vlm.backend:VLMGenerator",
}


def register_generator(name: str, factory: Callable[..., Generator] | str) -> None:
    _GENERATORS[name] = factory


def list_generators() -> list[str]:
    out = []
    for name, f in _GENERATORS.items():
        if callable(f) or importlib.util.find_spec(f.split(":")[0]) is not None:
            out.append(name)
    return sorted(out)


def create_generator(name: str, **params: Any) -> Generator:
    if name not in list_generators():
        raise ConfigError(f"unknown generator {name!r}; available: {', '.join(list_generators())}")
    f = _GENERATORS[name]
    if isinstance(f, str):
        mod, attr = f.split(":")
        f = getattr(importlib.import_module(mod), attr)
    try:
        return f(**params)
    except TypeError as e:
        raise ConfigError(f"bad parameters for generator {name!r}: {e}") from e
