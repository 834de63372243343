"""The stable result format of every ``ragmed eval`` command (``"schema": 1``; documented in eval/README.md).

::

    {"schema": 1, "task": "retrieval" | "vqa" | "report",
     "metrics": {"precision@5": 0.4, ...},          # flat, every value a fraction in [0, 1]
     "n": 120,                                       # items evaluated
     "n_by_metric": {"closed_accuracy": 70, ...},    # items behind each metric (VQA: closed vs open items)
     "skipped": [{"id": "...", "reason": "..."}],    # items not evaluated, with reasons
     "breakdown": {"by_question_type": {"PRES": {"n": 12, "closed_accuracy": 0.5}}, "by_organ": {...},
                   "by_domain": {...}},
     "config": {...}, "seconds": 12.3}
"""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

SCHEMA = 1
BREAKDOWNS = ("by_question_type", "by_organ", "by_domain")


def mean_metrics(items: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, int]]:
    """Mean of each metric over the items that have it; also how many items each mean is over."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for m in items:
        for k, v in m.items():
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            sums[k] += float(v)
            counts[k] += 1
    return {k: sums[k] / counts[k] for k in sums}, dict(counts)


def breakdown(items: list[dict[str, float]], groups: dict[str, list[str | None]]) -> dict[str, dict[str, Any]]:
    """``groups[name][i]`` is item i's group under ``name`` (``None``: not in that breakdown)."""
    out: dict[str, dict[str, Any]] = {name: {} for name in BREAKDOWNS}
    for name, labels in groups.items():
        by: dict[str, list[dict[str, float]]] = defaultdict(list)
        for m, g in zip(items, labels):
            if g is not None and str(g).strip():
                by[str(g).strip()].append(m)
        out[name] = {g: {"n": len(ms), **mean_metrics(ms)[0]} for g, ms in sorted(by.items())}
    return out


def make_result(task: str, per_item: list[dict[str, float]], groups: dict[str, list[str | None]],
                skipped: list[dict[str, Any]], config: dict[str, Any], seconds: float,
                extra_metrics: dict[str, float] | None = None) -> dict[str, Any]:
    metrics, counts = mean_metrics(per_item)
    if extra_metrics:
        metrics.update(extra_metrics)
    return {
        "schema": SCHEMA,
        "task": task,
        "metrics": {k: round(v, 6) for k, v in sorted(metrics.items())},
        "n": len(per_item),
        "n_by_metric": dict(sorted(counts.items())),
        "skipped": skipped,
        "breakdown": {name: {g: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in m.items()}
                             for g, m in vals.items()} for name, vals in breakdown(per_item, groups).items()},
        "config": config,
        "seconds": round(seconds, 3),
    }


def write_json(path: str | Path, obj: Any) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, p)
    return p


def validate_result(obj: dict[str, Any]) -> list[str]:
    """Problems with a result object (empty when it keeps the schema); used by the tests and by readers."""
    problems = []
    for key, typ in (("schema", int), ("metrics", dict), ("n", int), ("skipped", list), ("breakdown", dict),
                     ("config", dict), ("seconds", (int, float))):
        if not isinstance(obj.get(key), typ):
            problems.append(f"{key}: missing or not {typ}")
    if obj.get("schema") != SCHEMA:
        problems.append(f"schema must be {SCHEMA}")
    for k, v in (obj.get("metrics") or {}).items():
        if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            problems.append(f"metrics.{k} = {v!r} is not a fraction in [0, 1]")
    for name in BREAKDOWNS:
        if not isinstance((obj.get("breakdown") or {}).get(name), dict):
            problems.append(f"breakdown.{name} missing")
            continue
        for g, m in obj["breakdown"][name].items():
            if not isinstance(m.get("n"), int):
                problems.append(f"breakdown.{name}.{g}.n missing")
    for s in obj.get("skipped") or []:
        if "reason" not in s:
            problems.append("a skipped item has no reason")
    return problems
