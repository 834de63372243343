"""``ragmed align pairs|train|eval`` (``ragmed eval align`` is the same evaluation): preference fine-tuning of the
generator to the evidence (MMed-RAG RAG-PT pairs, DPO with LoRA). Thin: everything is in :mod:`ragmed.align`."""
from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def align():
    """Preference fine-tuning of the generator (RAG-PT pairs, DPO with LoRA)."""


_SET_HELP = ("Override a pipeline setting, KEY=VALUE (repeatable), e.g. generator.name=gguf then "
             "generator.params.closed=model.")


@align.command("pairs")
@click.option("--pipeline", default=None, help="pipelines/NAME.yaml or a name (default: the one that built the index).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--index", "index_dir", required=True, type=click.Path(), help="Index built from the training side.")
@click.option("--data", required=True, type=click.Path(dir_okay=False),
              help="Training questions (VQA-RAD / SLAKE JSON).")
@click.option("--images", type=click.Path(file_okay=False), default=None,
              help="Image folder (default: DATA's folder/images).")
@click.option("--format", "fmt", type=click.Choice(["vqa-rad", "slake"]), default=None, help="Question file format; default: from the file's fields.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Pair file (JSONL); meta in OUT.meta.json.")
@click.option("--limit", type=int, default=None, help="At most this many questions (a seeded random subset).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (subsets, bootstrap, training).")
@click.option("--f1-threshold", type=float, default=0.5, show_default=True, help="Open answers: correct when token F1 ≥ this.")
@click.option("--replace", type=click.Choice(["noise", "unrelated"]), default="noise", show_default=True,
              help="Cross-modality pairs: replace the image by Gaussian noise or an unrelated image (VLMs only).")
@click.option("--no-hallucinations", is_flag=True, help="Only RAG-PT pairs (no MMedPO-style hallucination pairs).")
@click.option("--fresh", is_flag=True, help="Start OUT afresh (default: resume, skipping questions already in it).")
@click.option("--max-new", type=int, default=None,
              help="Answer at most this many new questions in this run (0: only recount and reweight OUT).")
@click.option("--no-memo", is_flag=True,
              help="Encode every text the answer step asks for afresh (default: each text's vector is kept).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def pairs(pipeline, sets, index_dir, data, images, fmt, out, limit, seed, f1_threshold, replace, no_hallucinations,
          fresh, max_new, no_memo, quiet):
    """Build preference pairs: answer each training question with / without retrieval (and with the image replaced)."""
    from ragmed.align import pipeline_variant
    from ragmed.align import PairOptions, build_pairs, memo_pipeline

    variant, applied = pipeline_variant(pipeline, sets, Path(out).with_suffix(".pipeline.yaml"))
    p = memo_pipeline(index_dir, variant, memo=not no_memo)
    kg = None
    if not no_hallucinations:
        kg = p.knowledge
    images = images or str(Path(data).parent / "images")
    opts = PairOptions(limit=limit, seed=seed, f1_threshold=f1_threshold, replace=replace,
                       hallucinations=not no_hallucinations, fmt=fmt, resume=not fresh, max_new=max_new,
                       extra={"overrides": applied, "pipeline_file": Path(str(variant)).name if variant else None})
    meta = build_pairs(p, data, images, out, opts, progress=not quiet, kg=kg)
    c = meta["counts"]
    click.echo(f"{meta['questions_done']}/{meta['questions_selected']} selected questions done; "
               f"{meta['n_pairs']} pairs from {meta['n_questions_answered']} answered questions "
               f"({meta['n_questions_skipped']} skipped): " + ", ".join(f"{k} {v}" for k, v in c.items()))
    if meta.get("note"):
        click.echo(f"note: {meta['note']}")
    click.echo(f"wrote {out} and {out}.meta.json")


@align.command("train")
@click.option("--pairs", "pairs_path", required=True, type=click.Path(dir_okay=False, exists=True), help="Preference pair file (JSONL) from `ragmed align pairs`.")
@click.option("--pipeline", default=None, help="Pipeline whose generator is trained (default: the pair file's).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory (adapter/, checkpoints, card).")
@click.option("--beta", type=float, default=0.1, show_default=True, help="DPO β (strength of the pull towards the reference model).")
@click.option("--lr", type=float, default=5e-5, show_default=True, help="Learning rate.")
@click.option("--epochs", type=float, default=1.0, show_default=True, help="Passes over the pairs (when --max-steps is -1).")
@click.option("--max-steps", type=int, default=-1, show_default=True, help="Stop after this many optimiser steps (-1: epochs).")
@click.option("--batch-size", type=int, default=1, show_default=True, help="Pairs per step.")
@click.option("--grad-accum", type=int, default=1, show_default=True, help="Gradient accumulation steps.")
@click.option("--lora-r", type=int, default=16, show_default=True, help="LoRA rank.")
@click.option("--lora-alpha", type=int, default=32, show_default=True, help="LoRA alpha (scaling).")
@click.option("--lora-targets", default="q_proj,k_proj,v_proj,o_proj", show_default=True, help="Comma-separated module names that get LoRA adapters.")
@click.option("--weights/--no-weights", "use_weights", default=True, show_default=True,
              help="Multiply each pair's DPO loss by its weight (MMedPO-style); off: every pair weighs 1.")
@click.option("--two-stage", is_flag=True, help="Cross-modality pairs first, then the retrieval pairs (MMed-RAG).")
@click.option("--kinds", default=None, help="Only these pair kinds, comma-separated.")
@click.option("--max-length", type=int, default=1024, show_default=True, help="Longest prompt + answer in tokens.")
@click.option("--save-steps", type=int, default=10, show_default=True, help="Checkpoint every this many steps.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (subsets, bootstrap, training).")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--gradient-checkpointing", is_flag=True,
              help="Trade compute for memory (a 7B VLM on a GPU under 80 GB); off by default: 1.5–2× slower on a CPU.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in OUT.")
def train(pairs_path, pipeline, sets, out, beta, lr, epochs, max_steps, batch_size, grad_accum, lora_r, lora_alpha,
          lora_targets, use_weights, two_stage, kinds, max_length, save_steps, seed, threads, gradient_checkpointing,
          resume):
    """DPO with LoRA on a pair file (TRL DPOTrainer, per-pair weights, images per side)."""
    from ragmed.align import pipeline_variant
    from ragmed.align import TrainOptions, train_dpo
    from ragmed.pipeline import Pipeline

    meta_path = Path(str(pairs_path) + ".meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if pipeline is None and meta.get("pipeline_file"):
        pipeline = str(Path(pairs_path).parent / meta["pipeline_file"])
    variant, _ = pipeline_variant(pipeline, sets, Path(out) / "pipeline.yaml")
    p = Pipeline.from_yaml(variant)
    opts = TrainOptions(beta=beta, lr=lr, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                        grad_accum=grad_accum, lora_r=lora_r, lora_alpha=lora_alpha,
                        lora_targets=[t for t in lora_targets.split(",") if t], use_weights=use_weights,
                        two_stage=two_stage, kinds=[k for k in kinds.split(",")] if kinds else None,
                        max_length=max_length, save_steps=save_steps, seed=seed, threads=threads, resume=resume,
                        gradient_checkpointing=gradient_checkpointing,
                        images=meta.get("images"))
    card = train_dpo(p.generator, pairs_path, out, opts, progress=True)
    click.echo(f"trained {card['steps']} step(s) in {card['seconds_total']:.0f} s "
               f"({card['seconds_per_step']:.2f} s/step); adapter: {card['adapter']}")
    click.echo(f"use it: generator.params.adapter: {card['adapter']}")


def _eval_options(f):
    for opt in reversed([
        click.option("--pipeline", default=None, help="Pipeline (default: the one that built the index)."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=_SET_HELP),
        click.option("--adapter", "adapters", multiple=True, metavar="[NAME=]DIR",
                     help="An adapter to compare with the base generator (repeatable)."),
        click.option("--index", "index_dir", required=True, type=click.Path(), help="Index directory (built from the training side)."),
        click.option("--data", required=True, type=click.Path(dir_okay=False), help="Evaluation questions (never the pair side)."),
        click.option("--images", type=click.Path(file_okay=False), default=None, help="Image folder of the question file."),
        click.option("--format", "fmt", type=click.Choice(["vqa-rad", "slake"]), default=None, help="Question file format; default: from the file's fields."),
        click.option("--limit", type=int, default=None, help="At most this many questions (seeded random subset)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Random seed (subset, bootstrap)."),
        click.option("--bootstrap", type=int, default=1000, show_default=True, help="Bootstrap resamples (over images)."),
        click.option("--f1-threshold", type=float, default=0.5, show_default=True, help="Open answers: correct when token F1 ≥ this."),
        click.option("--noise/--no-noise", default=True, show_default=True,
                     help="Measure the copy rate (image replaced by noise; only for generators that take the image)."),
        click.option("--out", required=True, type=click.Path(dir_okay=False), help="Result JSON (plots beside it)."),
        click.option("--unrelated/--no-unrelated", default=True, show_default=True,
                     help="Also replace the image by an unrelated one of another organ (generators that take it)."),
        click.option("--no-memo", is_flag=True,
                     help="Encode every text the answer step asks for afresh (default: each text's vector is kept)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress output."),
    ]):
        f = opt(f)
    return f


@align.command("eval")
@_eval_options
def eval_align(pipeline, sets, adapters, index_dir, data, images, fmt, limit, seed, bootstrap, f1_threshold, noise,
               out, unrelated, no_memo, quiet):
    """Over-reliance, helpfulness, copy rate and accuracy with / without retrieval, before vs after alignment."""
    from ragmed.align import pipeline_variant
    from ragmed.align import EvalOptions, evaluate_alignment, memo_pipeline, table

    variant, applied = pipeline_variant(pipeline, sets, Path(out).with_suffix(".pipeline.yaml"))
    p = memo_pipeline(index_dir, variant, memo=not no_memo)
    named = []
    for a in adapters:
        name, _, d = a.rpartition("=")
        named.append((name or Path(d).parent.name or Path(d).name, d))
    opts = EvalOptions(limit=limit, seed=seed, bootstrap=bootstrap, f1_threshold=f1_threshold, noise=noise,
                       unrelated=unrelated, fmt=fmt, extra={"overrides": applied})
    res = evaluate_alignment(p, data, images or str(Path(data).parent / "images"), named, out, opts,
                             progress=not quiet)
    click.echo(table(res))
    click.echo(f"wrote {out}" + (f" and {len(res.get('plots', []))} plot(s)" if res.get("plots") else ""))
