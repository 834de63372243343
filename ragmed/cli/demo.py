"""``ragmed demo``: build the bundled demo index and ask one question about a DICOM file."""
from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default="indexes/demo", show_default=True,
              help="Index directory to build.")
@click.option("--corpus-dir", type=click.Path(file_okay=False), default=None,
              help="Where to write the demo manifest (default: OUT-corpus).")
@click.option("--pipeline", default=None, help="Pipeline (default: default).")
@click.option("--question", default=None, help="Question to ask (default: a pleural-effusion question).")
def demo(out, corpus_dir, pipeline, question):
    """Build a small index from DICOM files that pydicom and pydicom-data ship, then ask about a chest radiograph."""
    from ragmed.config import load_pipeline
    from ragmed.corpus import read_corpus
    from ragmed.demo import QUERY_QUESTION, SYNTHETIC_PHI, scan_for_phi, write_demo_corpus
    from ragmed.cli.render import render_answer
    from ragmed.pipeline import Pipeline, build_from_config

    out = Path(out)
    corpus_dir = Path(corpus_dir) if corpus_dir else out.with_name(out.name + "-corpus")
    demo_corpus = write_demo_corpus(corpus_dir)
    cfg = load_pipeline(pipeline)
    corpus = read_corpus(demo_corpus.manifest)
    click.echo(f"demo corpus: {len(corpus)} DICOM cases from pydicom / pydicom-data -> {demo_corpus.manifest}")
    report = build_from_config(corpus, out, cfg, progress=True)
    click.echo(f"index {out}: {report.n_cases} cases, {report.n_images} images, {len(report.skipped)} skipped, "
               f"{report.seconds:.1f} s")
    for s in report.skipped:
        click.echo(f"  skipped {s['case_id']}: {s['reason']}")
    hits = scan_for_phi(out)
    click.echo(f"PHI check: the synthetic identifiers written into {demo_corpus.phi_file.name} "
               f"({', '.join(SYNTHETIC_PHI)}) " + ("were NOT found in any file of the index" if not hits
                                                   else f"FOUND in {sorted({h[0] for h in hits})}"))
    if hits:
        raise click.ClickException("de-identification failed: identifiers found in the index")
    q = question or QUERY_QUESTION
    click.echo("loading the models (the first time this converts the default LLM once, ~20 s, so that later "
               "questions start at once)", err=True)
    pipe = Pipeline.from_components(cfg, out).warm_up()
    click.echo(f"\n$ ragmed ask {demo_corpus.query} \"{q}\" --index {out}\n")
    ans = pipe.ask(demo_corpus.query, q)
    click.echo(render_answer(ans))
