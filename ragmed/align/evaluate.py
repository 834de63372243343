"""Does the generator use the evidence well? Before vs after alignment, on questions whose images were never used for
the index or the pairs (split by image: ``ragmed.eval.split``).

Per question and per generator (the pipeline's own, then the same generator with each adapter), retrieval runs once
(the question's own image excluded) and the generator answers

- ``rag``: with the retrieved evidence (``Pipeline.answer(..., generator=g)``);
- ``no_rag``: without it (``g.generate(question, [], [], image=...)``);
- ``noise``: with the same evidence and the image replaced by Gaussian noise (generators that take the image);
- ``unrelated``: with the same evidence and the image replaced by another evaluation image of a different organ
  (generators that take the image; ``EvalOptions.unrelated``, on by default) — tells a model that reads the image
  from one that only learned to tell noise from a real image.

Metrics (correct = closed exact match, open token F1 ≥ ``f1_threshold``; the evaluation's normaliser):
``accuracy_rag``, ``accuracy_no_rag``, ``over_reliance`` (right without retrieval, wrong with it — share of all
questions), ``helpfulness`` (wrong without, right with), ``copy_rate`` (the short answer unchanged when the image is
noise: the cross-modality symptom; absent for a text-only generator, whose input does not change),
``accuracy_noise`` / ``accuracy_unrelated`` (right with the replaced image), ``image_gain_noise`` /
``image_gain_unrelated`` (per question: right with the real image minus right with the replaced one; > 0 when the
image helps), ``copy_rate_unrelated``, and ``accuracy_rag_closed`` / ``accuracy_rag_open``. Intervals: 95 %
percentile bootstrap resampling *images* (every
question of a drawn image comes along), and for each adapter the paired difference to the base generator on the same
resamples. Answers are cached in ``<out>.predictions.jsonl`` by (model, question): a second run with another adapter
reuses the base generator's answers.
"""
from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRICS = ("accuracy_rag", "accuracy_no_rag", "over_reliance", "helpfulness", "copy_rate", "accuracy_noise",
           "image_gain_noise", "copy_rate_unrelated", "accuracy_unrelated", "image_gain_unrelated",
           "accuracy_rag_closed", "accuracy_rag_open")


@dataclass
class EvalOptions:
    limit: int | None = None
    seed: int = 0
    bootstrap: int = 1000
    f1_threshold: float = 0.5
    noise: bool = True
    unrelated: bool = True
    fmt: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def scrub(obj):
    """Machine paths out of a result (``/tmp/x/y.json`` → ``y.json``)."""
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    if isinstance(obj, str):
        return re.sub(r"(?:/[\w.+-]+)+/([\w.+-]+)", r"\1", obj) if "/" in obj else obj
    return obj


def _generators(pipeline, adapters: list[tuple[str, str]]):
    from ragmed.generate import create_generator

    gens = [("base", pipeline.generator)]
    cfg = pipeline.config
    for name, d in adapters:
        params = dict(cfg.generator.params)
        for key in ("path", "model_path", "prompts_dir"):
            if isinstance(params.get(key), str):
                params[key] = cfg.resolve_path(params[key])
        params["adapter"] = str(Path(d).resolve())
        gens.append((name, create_generator(cfg.generator.name, **params)))
    return gens


def unrelated_image(by_organ: dict[str, set[str]], it, seed: int) -> str | None:
    """Another image of the same question file whose organ differs from the question's (seeded), or None."""
    pool = sorted(x for o, xs in by_organ.items() if o != (it.organ or "") for x in xs if x != it.image)
    return pool[seed % len(pool)] if pool else None


def per_item_flags(row: dict[str, Any]) -> dict[str, float]:
    out = {"accuracy_rag": float(row["rag_correct"]), "accuracy_no_rag": float(row["no_rag_correct"]),
           "over_reliance": float(row["no_rag_correct"] and not row["rag_correct"]),
           "helpfulness": float(row["rag_correct"] and not row["no_rag_correct"])}
    if row.get("copy") is not None:
        out["copy_rate"] = float(row["copy"])
    for rep in ("noise", "unrelated"):
        if row.get(f"{rep}_correct") is not None:
            out[f"accuracy_{rep}"] = float(row[f"{rep}_correct"])
            out[f"image_gain_{rep}"] = float(row["rag_correct"]) - float(row[f"{rep}_correct"])
    if row.get("copy_unrelated") is not None:
        out["copy_rate_unrelated"] = float(row["copy_unrelated"])
    out["accuracy_rag_closed" if row["task"] == "closed" else "accuracy_rag_open"] = float(row["rag_correct"])
    return out


def bootstrap(rows_by_model: dict[str, list[dict[str, Any]]], n_boot: int, seed: int) -> dict[str, Any]:
    """Point values and 95 % intervals per model and metric, resampling images; paired differences to ``base``."""
    import numpy as np

    models = list(rows_by_model)
    images = sorted({r["image"] for rows in rows_by_model.values() for r in rows})
    img_idx = {im: i for i, im in enumerate(images)}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(images), size=(n_boot, len(images))) if images else np.zeros((0, 0), int)
    counts = np.stack([np.bincount(d, minlength=len(images)) for d in draws]) if n_boot and images else None
    out: dict[str, Any] = {}
    samples: dict[tuple[str, str], Any] = {}
    for m in models:
        rows = rows_by_model[m]
        flags = [per_item_flags(r) for r in rows]
        res = {}
        for metric in METRICS:
            have = [(img_idx[r["image"]], f[metric]) for r, f in zip(rows, flags) if metric in f]
            if not have:
                continue
            im = np.array([h[0] for h in have])
            v = np.array([h[1] for h in have], dtype=float)
            sums = np.bincount(im, weights=v, minlength=len(images))
            ns = np.bincount(im, minlength=len(images)).astype(float)
            point = float(sums.sum() / ns.sum())
            entry = {"value": round(point, 4), "n": int(len(v))}
            if counts is not None:
                num, den = counts @ sums, counts @ ns
                boot = np.where(den > 0, num / np.maximum(den, 1), np.nan)
                samples[(m, metric)] = boot
                lo, hi = np.nanpercentile(boot, [2.5, 97.5])
                entry["ci95"] = [round(float(lo), 4), round(float(hi), 4)]
            res[metric] = entry
        out[m] = res
    deltas: dict[str, Any] = {}
    for m in models[1:]:
        d = {}
        for metric in METRICS:
            if metric in out.get(m, {}) and metric in out.get("base", {}):
                e = {"value": round(out[m][metric]["value"] - out["base"][metric]["value"], 4)}
                if (m, metric) in samples and ("base", metric) in samples:
                    diff = samples[(m, metric)] - samples[("base", metric)]
                    lo, hi = np.nanpercentile(diff, [2.5, 97.5])
                    e["ci95"] = [round(float(lo), 4), round(float(hi), 4)]
                d[metric] = e
        deltas[m] = d
    return {"models": out, "deltas_vs_base": deltas, "n_images": len(images)}


def evaluate_alignment(pipeline, data: str | Path, images: str | Path, adapters: list[tuple[str, str]],
                       out: str | Path, opts: EvalOptions | None = None, *, progress: bool = False) -> dict[str, Any]:
    from tqdm import tqdm

    from ragmed import __version__
    from ragmed.align.pairs import is_correct, item_seed, noise_image
    from ragmed.corpus.vqa import read_qa
    from ragmed.errors import RagmedError
    from ragmed.eval.vqa import select_items, short_answer
    from ragmed.io import load_image

    opts = opts or EvalOptions()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache_path = out.with_suffix(".predictions.jsonl")
    cache: dict[tuple[str, str], dict[str, Any]] = {}
    if cache_path.exists():
        for line in cache_path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                cache[(r["model"], r["qid"])] = r
    all_items = read_qa(data, format=opts.fmt)
    items = select_items(all_items, opts.limit, opts.seed)
    by_organ: dict[str, set[str]] = {}
    for it in all_items:
        by_organ.setdefault(it.organ or "", set()).add(it.image)
    gens = _generators(pipeline, adapters)
    t0 = time.perf_counter()
    images = Path(images)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in gens}
    skipped = []
    with cache_path.open("a", encoding="utf-8") as fh:
        for it in tqdm(items, desc="eval align", unit="q", disable=not progress):
            task = "closed" if (it.answer_type or "").strip().lower() == "closed" else "open"
            todo = [(n, g) for n, g in gens if (g.model_id, it.qid) not in cache]
            r = img = None
            if todo:
                try:
                    img = load_image(images / it.image)
                    r = pipeline.retrieve(img, it.question, exclude_hashes={img.content_hash})
                except RagmedError as e:
                    skipped.append({"qid": it.qid, "reason": str(e)})
                    continue
            for name, g in gens:
                key = (g.model_id, it.qid)
                if key not in cache:
                    ans = pipeline.answer(r, it.question, task=task, generator=g)
                    bare = g.generate(it.question, [], [], image=img, domain=r.domain, task=task)
                    row = {"model": g.model_id, "qid": it.qid, "image": it.image, "task": task, "gold": it.answer,
                           "rag": short_answer(ans), "no_rag": short_answer(bare),
                           "insufficient": ans.insufficient_evidence, "copy": None, "noise": None}
                    if opts.noise and getattr(g, "accepts_images", False):
                        gn = g.generate(it.question, ans.evidence, ans.knowledge,
                                        image=noise_image(img, item_seed(opts.seed, it.qid)), domain=r.domain,
                                        task=task)
                        row["noise"] = short_answer(gn)
                        row["copy"] = row["noise"].strip().lower() == row["rag"].strip().lower()
                        row["noise_correct"] = is_correct(row["noise"], it.answer, it.answer_type, opts.f1_threshold)
                    other = unrelated_image(by_organ, it, item_seed(opts.seed, it.qid))
                    if opts.unrelated and other and getattr(g, "accepts_images", False):
                        gu = g.generate(it.question, ans.evidence, ans.knowledge, image=load_image(images / other),
                                        domain=r.domain, task=task)
                        row["unrelated"], row["unrelated_image"] = short_answer(gu), other
                        row["copy_unrelated"] = row["unrelated"].strip().lower() == row["rag"].strip().lower()
                        row["unrelated_correct"] = is_correct(row["unrelated"], it.answer, it.answer_type,
                                                              opts.f1_threshold)
                    row["rag_correct"] = is_correct(row["rag"], it.answer, it.answer_type, opts.f1_threshold)
                    row["no_rag_correct"] = is_correct(row["no_rag"], it.answer, it.answer_type, opts.f1_threshold)
                    cache[key] = row
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                rows[name].append(cache[key])
    stats = bootstrap(rows, opts.bootstrap, opts.seed)
    cfg = pipeline.config
    result = {
        "task": "align", "schema": 1, "command": " ".join(["ragmed"] + sys.argv[1:]) if sys.argv else "",
        "config": {"data": Path(data).name, "format": opts.fmt, "limit": opts.limit, "seed": opts.seed,
                   "bootstrap": opts.bootstrap, "bootstrap_unit": "image", "f1_threshold": opts.f1_threshold,
                   "noise": opts.noise, "unrelated": opts.unrelated,
                   "n_items_in_file": len(all_items),
                   "pipeline": {"name": cfg.name, "generator": cfg.to_dict()["generator"]},
                   "index": Path(str(pipeline.index_path)).name, **opts.extra},
        "generators": {name: g.model_id for name, g in gens},
        "takes_image": {name: bool(getattr(g, "accepts_images", False)) for name, g in gens},
        "n_questions": len(rows["base"]), **stats, "skipped": skipped,
        "seconds": round(time.perf_counter() - t0, 1), "ragmed_version": __version__,
    }
    if not any(result["takes_image"].values()):
        result["copy_rate_note"] = ("no copy rate: the generator does not take the image, so replacing it by noise "
                                   "changes nothing it reads (copy rate 1 by construction)")
    result = scrub(result)
    result["plots"] = [p.name for p in plot_alignment(result, out)]
    out.write_text(json.dumps(result, indent=1))
    return result


def table(res: dict[str, Any]) -> str:
    """The before / after table as text."""
    models = list(res["models"])
    metrics = [m for m in METRICS if any(m in res["models"][x] for x in models)]
    w = max(len(m) for m in metrics) + 2
    head = "metric".ljust(w) + "".join(f"{x:>26}" for x in models) + "".join(f"{'Δ ' + x:>26}" for x in models[1:])
    lines = [head]
    for m in metrics:
        cells = []
        for x in models:
            e = res["models"][x].get(m)
            cells.append(f"{e['value']:.3f} [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]".rjust(26) if e and "ci95" in e
                         else (f"{e['value']:.3f}".rjust(26) if e else "—".rjust(26)))
        for x in models[1:]:
            e = res["deltas_vs_base"].get(x, {}).get(m)
            cells.append(f"{e['value']:+.3f} [{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}]".rjust(26) if e and "ci95" in e
                         else "—".rjust(26))
        lines.append(m.ljust(w) + "".join(cells))
    lines.append(f"n = {res['n_questions']} questions on {res['n_images']} images; 95 % bootstrap over images")
    return "\n".join(lines)


def plot_alignment(res: dict[str, Any], out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    models = list(res["models"])
    metrics = [m for m in METRICS if any(m in res["models"][x] for x in models)]
    fig, ax = plt.subplots(figsize=(1.4 * len(metrics) + 2, 3.6))
    width = 0.8 / max(1, len(models))
    for j, x in enumerate(models):
        vals, lo, hi = [], [], []
        for m in metrics:
            e = res["models"][x].get(m)
            v = e["value"] if e else float("nan")
            vals.append(v)
            ci = e.get("ci95", [v, v]) if e else [v, v]
            lo.append(v - ci[0])
            hi.append(ci[1] - v)
        xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(metrics))]
        ax.bar(xs, vals, width, yerr=[lo, hi], capsize=2, label=x)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([m.replace("_", "\n") for m in metrics], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_title(f"alignment: n={res['n_questions']} questions, {res['n_images']} images (95% CI, images resampled)",
                 fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = out.with_suffix(".png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return [p]
