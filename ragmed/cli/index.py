"""``ragmed index build`` / ``ragmed index info``."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ragmed.settings import DEFAULT_INDEX


@click.group()
def index():
    """Build and inspect index directories."""


@index.command("build")
@click.option("--corpus", "corpus_path", default=None, type=click.Path(dir_okay=False),
              help="Manifest (CSV/JSONL) or VQA JSON (with --format vqa-rad|slake --images DIR).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "vqa-rad", "slake"]), default=None,
              help="Corpus format; default: from the file extension / fields.")
@click.option("--images", type=click.Path(file_okay=False), default=None, help="Image folder (VQA sets; else the manifest's folder).")
@click.option("--column", "columns", multiple=True, metavar="OURS=THEIRS",
              help="Map a manifest column: --column id=uid; --column image= ignores the image column (text-only).")
@click.option("--pipeline", "pipeline", default=None, help="pipelines/NAME.yaml or a name (default: default).")
@click.option("--out", type=click.Path(file_okay=False), default=str(DEFAULT_INDEX), show_default=True,
              help="Index directory (the one `ragmed ask`, `index info` and `serve` use by default).")
@click.option("--fit/--no-fit", "fit", default=None,
              help="Fit the image tower to the corpus before indexing, or not (default: the pipeline's "
                   "index.fit_image_encoder).")
@click.option("--add", is_flag=True, help="Add the corpus's cases to the existing index at --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the build report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--dicomweb", "dicomweb_url", default=None, metavar="URL",
              help="Ingest studies from a PACS over DICOMweb instead of --corpus (images go to --images).")
@click.option("--query", "dicomweb_query", multiple=True, metavar="KEY=VALUE",
              help="QIDO-RS study filter with --dicomweb, e.g. --query ModalitiesInStudy=CR.")
@click.option("--reports", "dicomweb_reports", default=None, type=click.Path(dir_okay=False),
              help="With --dicomweb: CSV of reports keyed by StudyInstanceUID (else a study's SR text).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: decode + encode on a Ray cluster (extra 'scale'); see ragmed.index.ray_build.")
@click.option("--address", default=None, help="Ray cluster address (auto, ray://host:port); default: a local one.")
@click.option("--workers", type=int, default=2, show_default=True, help="Ray actors (encoder copies).")
@click.option("--layout", type=click.Choice(["monolithic", "ondisk"]), default="monolithic", show_default=True,
              help="Ray engine: one in-memory index per domain, or IVF lists on disk (needs an IVF factory).")
def build(corpus_path, fmt, images, columns, pipeline, out, fit, add, as_json, quiet, dicomweb_url, dicomweb_query,
          dicomweb_reports, engine, address, workers, layout):
    """Build an index from a corpus: decode, de-identify, embed, write FAISS + SQLite atomically."""
    if dicomweb_url:  # issue 15: a PACS as the corpus (ragmed.io.dicomweb writes a manifest, then the usual build)
        from ragmed.api import export_from_pacs

        corpus_path, pacs_skipped = export_from_pacs(dicomweb_url, Path(images or f"{out}-pacs"), dicomweb_query,
                                                     dicomweb_reports)
        images = None
        click.echo(f"dicomweb: {len(pacs_skipped)} stud(ies) skipped" + "".join(
            f"\n  {s['case_id']}: {s['reason']}" for s in pacs_skipped), err=True)
    elif not corpus_path:
        raise click.UsageError("give --corpus MANIFEST or --dicomweb URL")
    from ragmed.config import load_pipeline
    from ragmed.corpus import read_corpus
    from ragmed.pipeline import build_from_config

    cfg = load_pipeline(pipeline)
    mapping = {}
    for c in columns:
        if "=" not in c:
            raise click.BadParameter(f"{c!r} is not OURS=THEIRS", param_hint="--column")
        ours, theirs = c.split("=", 1)
        mapping[ours] = theirs
    corpus = read_corpus(corpus_path, format=fmt, images=images, columns=mapping)
    out = Path(out)
    if not quiet:
        click.echo(f"building {out} from {corpus_path}: {len(corpus)} cases ({len(corpus.skipped)} rows skipped "
                   f"so far), pipeline {cfg.name}, engine {engine}", err=True)
    if engine == "ray":
        from ragmed.pipeline import build_from_config_ray

        report = build_from_config_ray(corpus, out, cfg, address=address, workers=workers, layout=layout,
                                       progress=not quiet)
    else:
        report = build_from_config(corpus, out, cfg, add=add, progress=not quiet, fit=fit)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(f"index {out}: {report.n_cases} cases, {report.n_images} images "
               f"({report.added} added{', resumed after ' + str(report.resumed_from) if report.resumed_from else ''}) "
               f"in {report.seconds:.1f} s [{report.version}]")
    if report.skipped:
        click.echo(f"skipped {len(report.skipped)} row(s):")
        for s in report.skipped:
            where = f"row {s['row']}" if s["row"] else "case"
            click.echo(f"  {where} {s['case_id'] or '?'}: {s['reason']}" + (f" [{s['path']}]" if s["path"] and s["path"] not in s["reason"] else ""))


@index.command("info")
@click.argument("directory", type=click.Path(), default=str(DEFAULT_INDEX))
@click.option("--json", "as_json", is_flag=True, help="Print the index's manifest and counts as JSON.")
def info(directory, as_json):
    """Show what built an index and what it holds."""
    from ragmed.index import open_index

    inf = open_index(directory).info()
    if as_json:
        click.echo(json.dumps(inf, indent=2, default=str))
        return
    click.echo(f"index      {inf['path']} ({inf['version_dir']}, schema {inf['schema']}, ragmed {inf['ragmed_version']})")
    click.echo(f"pipeline   {inf['pipeline']['name']}")
    for role, e in inf["encoders"].items():
        click.echo(f"{role:<10} {e['id']} ({e['dim']}-d, space {e['space']})")
    click.echo(f"cases      {inf['n_cases']}  images {inf['n_images']}  skipped {inf['n_skipped']}")
    for d, kinds in inf["domains"].items():
        click.echo(f"domain     {d}: " + ", ".join(f"{k} {v['n']} ({v['factory']})" for k, v in kinds.items()))
    for ch, c in inf.get("calibration", {}).items():
        click.echo(f"floor      {ch}: {c['floor']:.3f} (p{c['percentile']:g} of {c['n']} leave-one-out best scores)")
    click.echo(f"corpus     {inf['corpus']['source']} ({inf['corpus']['format']}, checksum {inf['corpus']['checksum']})")
