"""Encoder registry: name → factory. Pipelines name encoders by registered name, never by import path.

``create_encoder(name, **params)`` builds one; ``list_encoders()`` lists names. Factories import their heavy
dependencies lazily. Backends register themselves here (see ``ragmed/encoders/__init__.py``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ragmed.errors import ConfigError

_FACTORIES: dict[str, tuple[str, Callable[..., Any]]] = {}  # name -> (kind "image"|"text"|"both", factory)


def register_encoder(name: str, kind: str, factory: Callable[..., Any]) -> None:
    if kind not in ("image", "text", "both"):
        raise ValueError(f"kind must be image, text or both, not {kind!r}")
    _FACTORIES[name] = (kind, factory)


def list_encoders(kind: str | None = None) -> list[str]:
    return sorted(n for n, (k, _) in _FACTORIES.items() if kind is None or k == kind or k == "both")


def encoder_kind(name: str) -> str:
    if name not in _FACTORIES:
        raise ConfigError(f"unknown encoder {name!r}; registered: {', '.join(list_encoders())}")
    return _FACTORIES[name][0]


def create_encoder(name: str, role: str | None = None, **params: Any):
    """Build the encoder registered as ``name``. ``role`` ("image" / "text") picks the tower of a two-tower model."""
    kind = encoder_kind(name)
    if role is not None and kind not in (role, "both"):
        raise ConfigError(f"encoder {name!r} is a {kind} encoder and cannot be used as the {role} encoder; "
                          f"{role} encoders: {', '.join(list_encoders(role))}")
    factory = _FACTORIES[name][1]
    try:
        return factory(role=role, **params) if kind == "both" else factory(**params)
    except TypeError as e:
        raise ConfigError(f"bad parameters for encoder {name!r}: {e}") from e
