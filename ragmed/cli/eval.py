"""``ragmed eval retrieval|vqa|report``: evaluation with a stable JSON result (``"schema": 1``; eval/README.md)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ragmed.eval import TASKS


@click.group("eval")
def eval_group():
    """Evaluate retrieval, VQA and report generation."""


def _finish(result: dict, out: str, predictions: list | None, predictions_path: str | None, plots: bool) -> None:
    from ragmed.eval import write_json

    write_json(out, result)
    if predictions_path:
        p = Path(predictions_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("w", encoding="utf-8") as f:
            for row in predictions or []:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    made = []
    if plots:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:  # the results are written; plots are optional
            click.echo("plots skipped: matplotlib is not installed (pip install 'ragmed[eval]')", err=True)
        else:
            from ragmed.eval import plots_for

            made = plots_for(result, out)
    m = result["metrics"]
    shown = ", ".join(f"{k} {v:.3f}" for k, v in m.items())
    click.echo(f"{result['task']}: n={result['n']} skipped={len(result['skipped'])} {shown}")
    click.echo(f"wrote {out}" + (f" and {len(made)} plot(s)" if made else "") +
               (f"; predictions in {predictions_path}" if predictions_path else ""))


@eval_group.command("retrieval")
@click.option("--index", "index_dir", required=True, type=click.Path(), help="Index directory.")
@click.option("--queries", required=True, type=click.Path(dir_okay=False),
              help="Queries: a corpus manifest (image/report tasks) or a VQA JSON (question tasks).")
@click.option("--task", required=True, type=click.Choice(TASKS),
              help="What queries what: image→image, image→report, report→image, question→report ….")
@click.option("--match", required=True, help="Relevance columns, comma-separated (all must match).")
@click.option("--exclude-same", "exclude_same", default=None,
              help="Column(s), comma-separated: drop every case sharing the query's value (leave-one-patient-out).")
@click.option("--k", "ks", default="1,5,10", show_default=True, help="Cut-offs, comma-separated.")
@click.option("--images", type=click.Path(file_okay=False), default=None,
              help="Image folder of the queries (VQA sets: default the JSON's folder/images).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "vqa-rad", "slake"]), default=None,
              help="Query file format (default: from the extension / fields).")
@click.option("--pipeline", default=None, help="Pipeline for the query encoders (default: the one that built the index).")
@click.option("--exclude-query-image/--include-query-image", default=True, show_default=True,
              help="Drop indexed cases holding the query's own image (same content hash).")
@click.option("--predictions", "predictions_path", default=None, type=click.Path(dir_okay=False),
              help="Write one JSON line per query (id, prediction, gold, correct, evidence ids).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Result JSON.")
@click.option("--plots/--no-plots", default=True, show_default=True, help="PNG plots beside the JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def retrieval(index_dir, queries, task, match, exclude_same, ks, images, fmt, pipeline, exclude_query_image,
              predictions_path, out, plots, quiet):
    """Precision / recall / hit / nDCG @K and MRR of retrieval against metadata relevance."""
    from ragmed.eval import evaluate_retrieval, parse_ks

    try:
        klist = parse_ks(ks)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--k") from None
    cols = [c.strip() for c in match.split(",") if c.strip()]
    excl = [c.strip() for c in (exclude_same or "").split(",") if c.strip()]
    preds: list = []
    result = evaluate_retrieval(index_dir, queries, task, cols, exclude_same=excl, ks=klist, pipeline=pipeline,
                                images=images, fmt=fmt, exclude_query_image=exclude_query_image, progress=not quiet,
                                predictions=preds)
    _finish(result, out, preds, predictions_path, plots)


@eval_group.command("vqa")
@click.option("--pipeline", default=None, help="pipelines/NAME.yaml or a name (default: the one that built the index).")
@click.option("--index", "index_dir", required=True, type=click.Path(), help="Index directory to answer from.")
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="VQA-RAD or SLAKE JSON.")
@click.option("--images", required=True, type=click.Path(file_okay=False), help="Folder holding the question images.")
@click.option("--format", "fmt", type=click.Choice(["vqa-rad", "slake"]), default=None,
              help="Default: detected from the fields.")
@click.option("--limit", type=int, default=None, help="Evaluate a seeded random subset of N questions.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --limit subset.")
@click.option("--exclude-query-image/--include-query-image", default=True, show_default=True,
              help="Exclude every indexed case holding the question's own image (same content hash).")
@click.option("--predictions", "predictions_path", default=None, type=click.Path(dir_okay=False),
              help="Write one JSON line per item (id, prediction, gold, correct, evidence ids).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Result JSON.")
@click.option("--plots/--no-plots", default=True, show_default=True, help="PNG plots beside the JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def vqa(pipeline, index_dir, data, images, fmt, limit, seed, exclude_query_image, predictions_path, out, plots, quiet):
    """Closed accuracy, open recall and token F1 of the pipeline's answers."""
    from ragmed.eval import evaluate_vqa

    preds: list = []
    result = evaluate_vqa(pipeline, index_dir, data, images, fmt=fmt, limit=limit, seed=seed,
                          exclude_query_image=exclude_query_image, progress=not quiet, predictions=preds)
    _finish(result, out, preds, predictions_path, plots)


@eval_group.command("report")
@click.option("--pred", required=True, type=click.Path(dir_okay=False),
              help="Generated reports: JSONL/JSON/CSV with id + report|prediction|text, or TXT one per line.")
@click.option("--ref", required=True, type=click.Path(dir_okay=False), help="Reference reports, same formats.")
@click.option("--kg", "kg_path", default=None, type=click.Path(),
              help="Knowledge graph for the finding F1 (default: the bundled graph).")
@click.option("--predictions", "predictions_path", default=None, type=click.Path(dir_okay=False),
              help="Write one JSON line per item (id, prediction, gold, correct, evidence ids).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Result JSON.")
def report(pred, ref, kg_path, predictions_path, out):
    """BLEU-1..4, ROUGE-L and clinical-finding F1 (METEOR: not available offline, see eval/README.md)."""
    from ragmed.eval import evaluate_reports

    preds: list = []
    result = evaluate_reports(pred, ref, kg_path=kg_path, predictions=preds)
    _finish(result, out, preds, predictions_path, plots=False)
    for name, why in result.get("unavailable_metrics", {}).items():
        click.echo(f"note: {why}", err=True)


def _add_align() -> None:
    """``ragmed eval align``: the alignment evaluation of ``ragmed align eval`` (cli/align.py), listed here too."""
    import importlib.util

    if importlib.util.find_spec("ragmed.cli.align") is not None:
        from ragmed.cli.align import eval_align

        eval_group.add_command(eval_align, "align")


_add_align()
