"""One shape for every "name → implementation" table: encoders, generators, selectors, image readers, routers,
index stores.

A :class:`Registry` maps a name to a factory — a callable, or an ``"module:attribute"`` string imported on first use
(so registering costs nothing and optional dependencies load only when that entry is used) — plus free-form
``info`` (an encoder's kind, the extra an entry needs …)::

    SELECTORS = Registry("selector")
    SELECTORS.register("gap", GapSelector)
    SELECTORS.register("rule", "ragmed.select.ltt:LTTSelector", extra=None)
    SELECTORS.create("gap", gamma=0.2)

Every registry raises the same errors: ``unknown selector 'x'; available: fixed, gap, …`` and ``bad parameters for
selector 'gap': …`` (:class:`ragmed.errors.ConfigError`). ``check_params(name, params)`` names parameters the factory
does not take, without building anything (used when a pipeline YAML is loaded). A leaf module.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ragmed.errors import ConfigError


@dataclass
class Entry:
    name: str
    factory: Callable[..., Any] | str
    info: dict[str, Any] = field(default_factory=dict)

    def available(self) -> bool:
        if callable(self.factory):
            return True
        return importlib.util.find_spec(self.factory.split(":")[0]) is not None

    def resolve(self) -> Callable[..., Any]:
        if callable(self.factory):
            return self.factory
        mod, attr = self.factory.split(":")
        obj: Any = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, factory: Callable[..., Any] | str, **info: Any) -> None:
        self._entries[name] = Entry(name, factory, info)

    def names(self, **where: Any) -> list[str]:
        """Available names (their module importable), sorted; ``where``: info values to match (e.g. ``kind="text"``;
        a value may also be matched by an info list)."""
        out = []
        for n, e in self._entries.items():
            if not e.available():
                continue
            if all(e.info.get(k) == v or (isinstance(e.info.get(k), (list, tuple, set)) and v in e.info.get(k))
                   for k, v in where.items()):
                out.append(n)
        return sorted(out)

    def __contains__(self, name: object) -> bool:
        return name in self._entries and self._entries[name].available()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def entry(self, name: str) -> Entry:
        if name not in self:
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names()) or 'none'}")
        return self._entries[name]

    def info(self, name: str) -> dict[str, Any]:
        return dict(self.entry(name).info)

    def get(self, name: str) -> Callable[..., Any]:
        return self.entry(name).resolve()

    def create(self, name: str, /, **params: Any) -> Any:
        factory = self.get(name)
        try:
            return factory(**params)
        except TypeError as e:
            raise ConfigError(f"bad parameters for {self.kind} {name!r}: {e}") from e

    def parameters(self, name: str) -> set[str] | None:
        """The parameter names the factory takes (None: it takes any keyword). Reads ``info["signature"]`` (an
        ``"module:attribute"`` of a light module) when given, so that checking needs no heavy import."""
        e = self.entry(name)
        target = e.info.get("signature")
        obj = Entry(name, target).resolve() if target else e.resolve()
        # a class forwarding **kwargs to its base: the bases' __init__ parameters count too
        chain = [c.__init__ for c in obj.__mro__ if "__init__" in vars(c) and c is not object] \
            if inspect.isclass(obj) else [obj]
        names: set[str] = set()
        for fn in chain:
            sig = inspect.signature(fn)
            names |= {n for n, p in sig.parameters.items()
                      if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n not in ("self", *e.info.get("implicit", ()))}
            if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
                return names
        return None

    def check_params(self, name: str, params: dict[str, Any]) -> None:
        allowed = self.parameters(name)
        if allowed is None:
            return
        allowed -= set(self.entry(name).info.get("hidden", ()))
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ConfigError(f"{self.kind} {name!r} has no parameter(s) {', '.join(unknown)}; it takes: "
                              f"{', '.join(sorted(allowed)) or 'none'}")


__all__ = ["Registry", "Entry"]
