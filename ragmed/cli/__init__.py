"""The ``ragmed`` command. Thin: every command calls the Python API; a RagmedError becomes one line and exit 1.

Sub-command groups live in their own modules and are imported only when used (``ragmed kg`` → ``cli/kg.py``,
``ragmed encoder`` → ``cli/encoder.py``, ``ragmed eval`` → ``cli/eval.py``, ``ragmed serve`` → ``cli/serve.py``),
so ``ragmed --help`` stays fast.
"""
from __future__ import annotations

import importlib
import logging
import sys

import click

from ragmed.version import __version__
from ragmed.errors import RagmedError

LAZY_GROUPS = {
    "index": ("ragmed.cli.index", "index", "Build and inspect index directories."),
    "ask": ("ragmed.cli.ask", "ask", "Ask a question about an image, answered with cited evidence."),
    "kg": ("ragmed.cli.kg", "kg", "Build, inspect and query knowledge graphs; link text to concepts."),
    "encoder": ("ragmed.cli.encoder", "encoder", "List, train and inspect encoders."),
    "eval": ("ragmed.cli.eval", "eval_group", "Evaluate retrieval, VQA and report generation."),
    "serve": ("ragmed.cli.serve", "serve", "Run the HTTP service (FastAPI)."),
    "demo": ("ragmed.cli.demo", "demo", "Build the bundled demo index and ask one question about a DICOM file."),
    "align": ("ragmed.cli.align", "align", "Preference fine-tuning of the generator (RAG-PT, DPO)."),
}


VERBOSE_FLAGS = ("-v", "--verbose")


class LazyGroup(click.Group):
    def parse_args(self, ctx, args):
        """``-v`` / ``--verbose`` anywhere before ``--`` (``ragmed ask -v …`` as well as ``ragmed -v ask …``): no
        sub-command has an option of that name, so it is moved in front of the sub-command."""
        cut = args.index("--") if "--" in args else len(args)
        head = args[:cut]
        flags = [a for a in head if a in VERBOSE_FLAGS]
        return super().parse_args(ctx, flags[:1] + [a for a in head if a not in VERBOSE_FLAGS] + args[cut:])

    def list_commands(self, ctx):
        return sorted(n for n, (mod, _, _) in LAZY_GROUPS.items() if importlib.util.find_spec(mod) is not None)

    def get_command(self, ctx, name):
        if name not in LAZY_GROUPS:
            return None
        mod, attr, _ = LAZY_GROUPS[name]
        if importlib.util.find_spec(mod) is None:
            return None
        return getattr(importlib.import_module(mod), attr)

    def format_commands(self, ctx, formatter):
        rows = [(n, LAZY_GROUPS[n][2]) for n in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RagmedError as e:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ragmed")
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def main(ctx, verbose: bool):
    """ragmed: answer questions about medical images with retrieved, cited evidence."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    handler = logging.StreamHandler()
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)  # also caps libraries that set DEBUG themselves
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        handlers=[handler])
    _quiet_libraries(verbose)


def _quiet_libraries(verbose: bool) -> None:
    import os
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        warnings.filterwarnings("ignore")
        for name in ("pydicom", "transformers", "sentence_transformers", "faiss", "httpx", "bm25s", "urllib3"):
            logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()
