"""PNG plots beside the result JSON (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_breakdown(result: dict[str, Any], breakdown: str, metric: str, path: str | Path, *, title: str = "") -> Path | None:
    """One bar per group of ``result["breakdown"][breakdown]`` showing ``metric`` (n under each label)."""
    groups = {g: m for g, m in result.get("breakdown", {}).get(breakdown, {}).items() if metric in m}
    if not groups:
        return None
    plt = _plt()
    names = sorted(groups, key=lambda g: -groups[g]["n"])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names) + 2), 3.6))
    ax.bar(range(len(names)), [groups[g][metric] for g in names], color="#4C72B0")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([f"{g}\n(n={groups[g]['n']})" for g in names], rotation=45 if len(names) > 6 else 0,
                       ha="right" if len(names) > 6 else "center", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(metric)
    overall = result.get("metrics", {}).get(metric)
    if overall is not None:
        ax.axhline(overall, color="grey", ls="--", lw=0.8, label=f"overall {overall:.3f}")
        ax.legend(fontsize=8)
    ax.set_title(title or f"{metric} {breakdown.replace('_', ' ')}")
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def plots_for(result: dict[str, Any], out_json: str | Path) -> list[Path]:
    """The standard plots of one result, written beside ``out_json`` (``NAME.<breakdown>.png``)."""
    base = Path(out_json)
    stem = base.with_suffix("")
    made: list[Path] = []
    task = result.get("task")
    if task == "vqa":
        specs = [("by_question_type", "accuracy"), ("by_question_type", "closed_accuracy"),
                 ("by_organ", "accuracy"), ("by_domain", "accuracy")]
    elif task == "retrieval":
        k = max(result.get("config", {}).get("k", [10]))
        specs = [("by_question_type", f"hit@{k}"), ("by_organ", f"precision@{k}"), ("by_domain", f"ndcg@{k}")]
    else:
        specs = []
    for breakdown, metric in specs:
        p = bar_breakdown(result, breakdown, metric, f"{stem}.{breakdown}.{metric.replace('@', '_at_')}.png")
        if p is not None:
            made.append(p)
    return made
