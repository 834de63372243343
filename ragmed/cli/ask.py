"""``ragmed ask IMAGE "QUESTION"``."""
from __future__ import annotations

import json

import click

from ragmed.api import TASKS
from ragmed.settings import DEFAULT_INDEX


@click.command()
@click.argument("image", type=click.Path())
@click.argument("question", required=False, default="")
@click.option("--index", "index_dir", type=click.Path(), default=str(DEFAULT_INDEX), show_default=True,
              help="Index directory to answer from.")
@click.option("--pipeline", default=None, help="pipelines/NAME.yaml or a name (default: the one that built the index).")
@click.option("--k", type=int, default=None, help="Candidates to retrieve (default: the pipeline's top_k).")
@click.option("--task", type=click.Choice(TASKS), default=None,
              help="closed (yes/no or either/or), open, or report (an empty QUESTION: write a report); default: "
                   "guessed from the question.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON (schema in the README).")
def ask(image, question, index_dir, pipeline, k, task, as_json):
    """Answer QUESTION about IMAGE (DICOM, PNG, JPEG or a DICOM series folder) with cited evidence; with
    --task report and no QUESTION, write a short report from the retrieved cases."""
    from ragmed.pipeline import Pipeline
    from ragmed.cli.render import render_answer

    from ragmed.api import validate_question

    # the same refusal as the API and the service, before any model loads
    question = validate_question(question, task=task)
    p = Pipeline.for_index(index_dir, pipeline)
    ans = p.ask(image, question, k=k, task=task)
    click.echo(json.dumps(ans.to_dict(), indent=2, ensure_ascii=False) if as_json else render_answer(ans))
    exit_now()


def exit_now() -> None:
    """End a one-shot command at once, skipping the interpreter's teardown.

    Freeing the loaded models and the knowledge graph object by object takes about 1 s, a fifth of the cold-start
    budget, and a read-only command has nothing left to save. Only in a real process (standard output is the
    process's own), never under click's CliRunner (tests, apps that embed the CLI)."""
    import logging
    import os
    import sys

    if sys.stdout is not sys.__stdout__:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)
