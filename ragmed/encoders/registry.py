"""Encoder registry: name → factory (a :class:`ragmed.registry.Registry`). Pipelines name encoders by registered name,
never by import path.

``create_encoder(name, **params)`` builds one; ``list_encoders(kind)`` lists names. Each entry records its kind
(``image`` / ``text`` / ``both`` towers) and where its parameters are declared (``signature``: a module that imports no
torch), so a pipeline's encoder parameters are checked when the YAML loads. Backends register themselves in
``ragmed/encoders/__init__.py``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ragmed.errors import ConfigError
from ragmed.registry import Registry

ENCODERS = Registry("encoder")


def register_encoder(name: str, kind: str, factory: Callable[..., Any] | str, *, signature: str | None = None,
                     hidden: tuple[str, ...] = ()) -> None:
    if kind not in ("image", "text", "both"):
        raise ValueError(f"kind must be image, text or both, not {kind!r}")
    ENCODERS.register(name, factory, kind=kind, signature=signature, implicit=("role",), hidden=hidden)


def list_encoders(kind: str | None = None) -> list[str]:
    if kind is None:
        return ENCODERS.names()
    return sorted(set(ENCODERS.names(kind=kind)) | set(ENCODERS.names(kind="both")))


def encoder_kind(name: str) -> str:
    return ENCODERS.info(name)["kind"]


def check_encoder_params(name: str, params: dict[str, Any]) -> None:
    """Parameter names are checked at load time (values such as weight paths only when the encoder is built)."""
    if ENCODERS.info(name).get("signature"):
        ENCODERS.check_params(name, params)


def create_encoder(name: str, role: str | None = None, **params: Any):
    """Build the encoder registered as ``name``. ``role`` ("image" / "text") picks the tower of a two-tower model."""
    kind = encoder_kind(name)
    if role is not None and kind not in (role, "both"):
        raise ConfigError(f"encoder {name!r} is a {kind} encoder and cannot be used as the {role} encoder; "
                          f"{role} encoders: {', '.join(list_encoders(role))}")
    return ENCODERS.create(name, role=role, **params) if kind == "both" else ENCODERS.create(name, **params)
