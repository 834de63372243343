"""``ragmed encoder``: list registered encoders, train the default image tower on a corpus, inspect a model directory."""
from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("encoder")
def encoder():
    """List, train and inspect encoders."""


@encoder.command("list")
@click.option("--kind", type=click.Choice(["image", "text"]), default=None, help="Only encoders usable in this role.")
def list_cmd(kind):
    """Registered encoder names and their kind (image, text, or both towers)."""
    from ragmed.encoders import encoder_kind, list_encoders

    for name in list_encoders(kind):
        click.echo(f"{name}\t{encoder_kind(name)}")


@encoder.command("train")
@click.option("--corpus", "corpus_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Corpus manifest (CSV / JSONL) with image paths and report text.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Model directory to write.")
@click.option("--format", "fmt", default=None, help="Manifest format (csv, jsonl, vqa-rad, slake); default: by suffix.")
@click.option("--images", default=None, type=click.Path(exists=True, file_okay=False), help="Image folder (VQA sets).")
@click.option("--text-field", "text_fields", multiple=True,
              help="Also use this metadata column as text (rendered 'field: value'); repeatable.")
@click.option("--init", default=None, help="Start from a model directory, or 'shipped' for the bundled weights.")
@click.option("--epochs", default=10, show_default=True, type=int, help="Passes over the corpus.")
@click.option("--epoch-size", default=None, type=int, help="Samples per epoch (default: the corpus size).")
@click.option("--batch-size", default=128, show_default=True, type=int, help="Images per contrastive batch.")
@click.option("--lr", default=None, type=float, help="Learning rate (default 2e-3; 5e-4 with --init).")
@click.option("--ssl-weight", default=0.0, show_default=True, type=float, help="Weight of the image–image term.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of initialisation and sampling.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train_cmd(corpus_path, out, fmt, images, text_fields, init, epochs, epoch_size, batch_size, lr, ssl_weight, seed,
              quiet):
    """Train the ragmed-default image tower contrastively into the frozen MiniLM text space.

    Checkpoints go beside OUT (``.OUT.checkpoint``); rerunning the same command resumes. The result is a model
    directory (config.json, model.safetensors, preprocess.json): use it with
    ``encoders: {image: {name: ragmed-default, params: {path: OUT}}}``.
    """
    from ragmed.corpus import read_corpus
    from ragmed.encoders import (PreprocessConfig, TrainConfig, build_trainset, create_encoder, read_model_dir,
                                 samples_from_corpus, shipped_path, train_tower)

    corpus = read_corpus(corpus_path, format=fmt, images=images)
    init_dir = str(shipped_path()) if init == "shipped" else init
    pre = PreprocessConfig()
    if init_dir:
        pre = PreprocessConfig.from_dict(read_model_dir(init_dir)["preprocess"])
    skipped: list = []
    data = build_trainset(samples_from_corpus(corpus, text_fields=text_fields, skipped=skipped), pre.size)
    if not quiet:
        click.echo(f"{len(data)} images with text ({len(data.texts)} distinct texts); {len(skipped)} unreadable "
                   f"images skipped", err=True)
    cfg = TrainConfig(epochs=epochs, epoch_size=epoch_size, batch_size=min(batch_size, max(2, len(data))),
                      lr=lr if lr is not None else (5e-4 if init_dir else 2e-3), ssl_weight=ssl_weight, seed=seed)
    path = train_tower(data, out, create_encoder("minilm"), config=cfg, preprocess=pre, init=init_dir,
                       progress=not quiet,
                       info={"trained_on": f"corpus {Path(corpus_path).name} ({len(data)} images)",
                             "corpus_checksum": corpus.checksum(), "skipped_images": len(skipped)})
    info = read_model_dir(path)["config"]
    click.echo(json.dumps({"out": str(path), "id": info["id"], "images": len(data),
                           "seconds": info["training"]["seconds"],
                           "final_loss": (info["training"]["history"] or [{}])[-1].get("loss")}))


@encoder.command("info")
@click.argument("model", default="ragmed-default")
def info_cmd(model):
    """Show a ragmed-default model directory's config (MODEL: a directory, or 'ragmed-default' for the shipped one)."""
    from ragmed.encoders import read_model_dir, shipped_path

    md = read_model_dir(shipped_path() if model == "ragmed-default" else model)
    cfg = md["config"]
    cfg.get("training", {}).pop("history", None)
    click.echo(json.dumps({"path": str(md["path"]), **cfg, "preprocess": md["preprocess"]}, indent=2))
