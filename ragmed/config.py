"""Typed pipeline configuration, parsed once from ``pipelines/*.yaml`` at the edge.

Every section is a pydantic model with ``extra="forbid"`` so that a typo is an error naming the field and the
file. Model paths are *not* checked here: a missing weight is reported when the pipeline is used, with how to
obtain it, so that every shipped pipeline loads and validates anywhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ragmed.errors import ConfigError

PIPELINES_DIR = Path(__file__).resolve().parent.parent / "pipelines"
PACKAGED_PIPELINES = Path(__file__).resolve().parent / "pipelines"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class EncoderSpec(_Model):
    """An encoder by registered name plus its parameters (``path`` for local weights, etc.)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from ragmed.encoders import ENCODERS

        try:
            ENCODERS.entry(v)  # "unknown encoder 'x'; available: …"
        except ConfigError as e:
            raise ValueError(str(e)) from None  # pydantic adds the field's location
        return v

    @model_validator(mode="after")
    def _known_params(self) -> "EncoderSpec":
        """Parameter names are checked at load time (values such as weight paths only when the encoder is built)."""
        from ragmed.encoders import check_encoder_params

        try:
            check_encoder_params(self.name, self.params)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return self


class EncodersConfig(_Model):
    text: EncoderSpec = Field(default_factory=lambda: EncoderSpec(name="minilm"))
    image: EncoderSpec | None = Field(default_factory=lambda: EncoderSpec(name="classic"))


class IndexConfig(_Model):
    factory: str = "auto"  # FAISS factory string ("Flat", "HNSW32,Flat", "IVF1024,PQ32" …) or "auto"
    metric: Literal["cosine"] = "cosine"
    batch_size: int = Field(32, ge=1, le=4096)
    ef_search: int = Field(128, ge=1)
    nprobe: int = Field(32, ge=1)
    auto_flat_below: int = Field(50_000, ge=0)  # "auto": exact search below this many vectors, HNSW above
    decode_workers: int = Field(2, ge=0, le=64)
    allow_burned_in: bool = False
    # fine-tune the default image tower on the corpus before embedding: true, false, or "auto" (when the corpus has
    # at least fit_auto_min_images images)
    fit_image_encoder: bool | Literal["auto"] = False
    fit_auto_min_images: int = Field(300, ge=1)
    fit_max_images: int = Field(4096, ge=2)  # a larger corpus is fitted on a random sample (bounded memory)
    fit_epochs: int = Field(10, ge=1)  # passes over the corpus's images, bounded by the two below
    fit_min_steps: int = Field(200, ge=1)  # batches of 64
    fit_max_steps: int = Field(2000, ge=1)
    fit_ssl_weight: float = Field(3.0, ge=0)  # image–image term (every image, report or not); 0: image–report only


class DomainSpec(_Model):
    name: str
    description: str = ""
    modalities: list[str] = Field(default_factory=list)  # DICOM Modality codes routed here
    body_parts: list[str] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)  # corpus metadata values (e.g. image_organ) routed here
    encoders: EncodersConfig | None = None  # per-domain encoders, else the pipeline's


def _registered(registry_path: str, name: str) -> str:
    """``name`` must be in the registry at ``module:attribute`` (the error lists what is available)."""
    import importlib

    mod, attr = registry_path.split(":")
    try:
        getattr(importlib.import_module(mod), attr).entry(name)
    except ConfigError as e:
        raise ValueError(str(e)) from None  # pydantic adds the field's location
    return name


ROUTER_PARAMS = ("order", "unknown_modality", "temperature", "negatives", "ood_margin", "build_zero_shot",
                 "fit_max_per_domain")


class RouterConfig(_Model):
    name: str = "tags"
    threshold: float = Field(0.5, ge=0, le=1)
    refuse_below: float = Field(0.0, ge=0, le=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _registered("ragmed.domains:ROUTERS", v)

    @field_validator("params")
    @classmethod
    def _known_params(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(v) - set(ROUTER_PARAMS))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; known: {', '.join(ROUTER_PARAMS)}")
        return v


class RetrievalConfig(_Model):
    top_k: int = Field(10, ge=1, le=1000)
    channels: list[str] = Field(default_factory=lambda: ["image-image", "image-report", "question-report"])
    fusion: Literal["rrf", "score"] = "rrf"
    rrf_k: int = Field(60, ge=1)
    weights: dict[str, float] = Field(default_factory=dict)


class SelectConfig(_Model):
    name: str = "gap"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _registered("ragmed.select:SELECTORS", v)

    @model_validator(mode="after")
    def _known_params(self) -> "SelectConfig":
        from ragmed.select import SELECTORS

        try:
            SELECTORS.check_params(self.name, self.params)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return self


class GeneratorConfig(_Model):
    name: str = "extractive"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _registered("ragmed.generate:GENERATORS", v)

    @model_validator(mode="after")
    def _known_params(self) -> "GeneratorConfig":
        from ragmed.generate import GENERATORS

        try:
            GENERATORS.check_params(self.name, self.params)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return self


class KnowledgeConfig(_Model):
    path: str | None = None  # a knowledge graph directory; None disables knowledge evidence
    max_concepts: int = Field(5, ge=0)
    params: dict[str, Any] = Field(default_factory=dict)


class PipelineConfig(_Model):
    name: str = "default"
    description: str = ""
    encoders: EncodersConfig = Field(default_factory=EncodersConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    domains: list[DomainSpec] = Field(default_factory=list)
    router: RouterConfig = Field(default_factory=RouterConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    prompts: dict[str, str] = Field(default_factory=dict)
    source: str | None = Field(None, exclude=True)  # the file it came from

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"source"})

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> "PipelineConfig":
        try:
            cfg = cls.model_validate(data or {})
        except ValidationError as e:
            raise ConfigError(_explain(e), path=source) from None
        cfg.source = source
        return cfg

    def resolve_path(self, value: str | None) -> str | None:
        """Resolve a path in the YAML: ``~`` and env vars expanded, relative to the repository root when it exists
        there, else relative to the YAML's own directory."""
        import os

        if value is None:
            return None
        v = os.path.expandvars(os.path.expanduser(value))
        p = Path(v)
        if p.is_absolute():
            return str(p)
        for base in (Path.cwd(), PIPELINES_DIR.parent, Path(self.source).parent if self.source else None):
            if base is not None and (base / p).exists():
                return str(base / p)
        return str(p)


def _explain(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}")
    return "invalid pipeline: " + "; ".join(parts)


def find_pipeline(name_or_path: str | Path | None) -> Path | None:
    """``None`` → default; a name → ``pipelines/NAME.yaml`` (repository, then packaged copy); else a path."""
    if name_or_path is None:
        name_or_path = "default"
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    for d in (PIPELINES_DIR, PACKAGED_PIPELINES):
        cand = d / f"{name_or_path}.yaml"
        if cand.exists():
            return cand
    return None


def load_pipeline(name_or_path: str | Path | None = None) -> PipelineConfig:
    import yaml

    p = find_pipeline(name_or_path)
    if p is None:
        raise ConfigError(f"no pipeline named {name_or_path!r}; available: {', '.join(list_pipelines())}")
    if not p.exists():
        raise ConfigError("pipeline file not found", path=str(p))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", path=str(p)) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError("a pipeline file must be a YAML mapping", path=str(p))
    return PipelineConfig.from_dict(data or {}, source=str(p))


def list_pipelines() -> list[str]:
    names = set()
    for d in (PIPELINES_DIR, PACKAGED_PIPELINES):
        if d.exists():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)
