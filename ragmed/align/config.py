"""Pipeline variants for alignment: a pipeline YAML with ``--set key=value`` overrides, written beside the outputs
so that every pair file, run and evaluation names the exact pipeline it used."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def parse_value(v: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(v)
    except yaml.YAMLError:
        return v


def pipeline_variant(pipeline: str | None, sets: list[str] | tuple[str, ...] = (), out: str | Path | None = None,
                     ) -> tuple[Path | str | None, dict[str, Any]]:
    """``pipeline`` (a name or path) with dotted overrides applied (``generator.params.closed=model``). Without
    overrides the pipeline itself is returned; with them the variant is written to ``out`` (a .yaml path) and that
    path is returned, with the overrides. Setting ``generator.name`` to another generator drops the previous
    generator's parameters (set the new ones after it)."""
    from ragmed.config import find_pipeline, load_pipeline
    from ragmed.errors import ConfigError

    if not sets:
        return pipeline, {}
    cfg = load_pipeline(pipeline).to_dict()
    applied: dict[str, Any] = {}
    for s in sets:
        if "=" not in s:
            raise ConfigError(f"--set {s!r}: expected KEY=VALUE, e.g. generator.params.closed=model")
        key, val = s.split("=", 1)
        node = cfg
        parts = key.strip().split(".")
        for k in parts[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {k} is not a mapping")
        value = parse_value(val)
        if parts == ["generator", "name"] and value != node.get("name"):
            node["params"] = {}  # the previous generator's parameters do not apply to another generator
        node[parts[-1]] = applied[key] = value
    src = find_pipeline(pipeline)
    if src is not None and cfg.get("knowledge", {}).get("path"):
        # keep relative paths of the original meaningful from wherever the variant is written
        kp = Path(cfg["knowledge"]["path"])
        if not kp.is_absolute():
            base = Path(load_pipeline(pipeline).resolve_path(str(kp)) or kp)
            cfg["knowledge"]["path"] = str(base.resolve()) if base.exists() else str(kp)
    import yaml

    out = Path(out) if out else Path("pipeline-variant.yaml")
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg["description"] = (cfg.get("description") or "") + f" [variant: {', '.join(sets)}]"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    load_pipeline(out)  # validate now
    return out, applied
