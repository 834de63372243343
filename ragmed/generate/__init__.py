"""Generators: one protocol, several backends, chosen by ``generator.name`` in the pipeline YAML.

Built in: ``extractive`` (no model: composes the answer from the evidence's most relevant sentences, each cited).
Model backends (``gguf``, ``transformers``, ``openai``) register themselves from their modules.

A backend that embeds text with a ``text_encoder`` parameter registers ``shares_text_encoder``: ``"any"`` (it works
in whatever space the pipeline's text encoder has) or an encoder name (it needs exactly that encoder with default
parameters); the pipeline then passes its own text encoder instead of letting the backend load a second one.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ragmed.registry import Registry
from ragmed.types import Evidence, Generation, KnowledgeEvidence


class Generator(Protocol):
    id: str

    def warm_up(self) -> None: ...

    def generate(self, question: str, evidence: list[Evidence], knowledge: list[KnowledgeEvidence], *,
                 image=None, domain: str | None = None, task: str = "open") -> Generation: ...


GENERATORS = Registry("generator")
GENERATORS.register("extractive", "ragmed.generate.extractive:ExtractiveGenerator", shares_text_encoder="any")
GENERATORS.register("gguf", "ragmed.generate.gguf:GGUFGenerator", extra="llm")
GENERATORS.register("transformers", "ragmed.generate.hf:TransformersGenerator", extra="llm")
GENERATORS.register("openai", "ragmed.generate.openai_backend:OpenAIGenerator")
GENERATORS.register("vote", "ragmed.generate.vote:VoteGenerator")
# reads the image; its classifier was trained on plain MiniLM question vectors
GENERATORS.register("ragmed-answerer", "ragmed.generate.answerer.backend:AnswererGenerator", shares_text_encoder="minilm")
GENERATORS.register("ragmed-vlm", "ragmed.generate.vlm.backend:VLMGenerator", extra="llm")  # ragmed's own small VLM


def register_generator(name: str, factory: Callable[..., Generator] | str, **info: Any) -> None:
    GENERATORS.register(name, factory, **info)


def list_generators() -> list[str]:
    return GENERATORS.names()


def create_generator(name: str, **params: Any) -> Generator:
    return GENERATORS.create(name, **params)
