"""``ragmed serve …``: HTTP services.

``ragmed serve api``: question answering over an index (``POST /v1/ask``, ``/v1/retrieve``) for decision-support
apps; see :mod:`ragmed.serve.api`.
``ragmed serve openai``: an OpenAI-compatible chat-completions server for a local generator (``gguf`` by default:
SmolLM2-135M-Instruct), e.g. as the peer of the ``openai`` generator backend or for other tools.
"""
from __future__ import annotations

import click


def _parse_params(items: tuple[str, ...]) -> dict:
    import yaml

    out = {}
    for it in items:
        if "=" not in it:
            raise click.BadParameter(f"{it!r} is not KEY=VALUE", param_hint="--param")
        k, v = it.split("=", 1)
        out[k.strip()] = yaml.safe_load(v) if v.strip() else ""
    return out


@click.group()
def serve():
    """Run ragmed's HTTP services."""


@serve.command("openai")
@click.option("--generator", "gen_name", default=None, help="Generator backend (default gguf, or the pipeline's).")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="Generator parameter (repeatable), e.g. -p path=models/qwen2-vl -p threads=1.")
@click.option("--pipeline", default=None, help="Take the generator (name and params) from this pipeline YAML.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--model-name", default=None, help="Model id to serve under (default: the generator's id).")
@click.option("--api-key-env", default=None, metavar="VAR",
              help="Require 'Authorization: Bearer $VAR' (the key is read from this environment variable).")
def serve_openai(gen_name, params, pipeline, host, port, model_name, api_key_env):
    """Serve a local generator as an OpenAI-compatible /v1/chat/completions endpoint."""
    import os

    from ragmed.errors import ConfigError
    from ragmed.generate import create_generator
    from ragmed.serve.openai_server import run

    kw = {}
    if pipeline:
        from ragmed.config import load_pipeline

        cfg = load_pipeline(pipeline)
        gen_name = gen_name or cfg.generator.name
        kw = dict(cfg.generator.params)
        for key in ("path", "model_path", "prompts_dir"):
            if isinstance(kw.get(key), str):
                kw[key] = cfg.resolve_path(kw[key])
    kw.update(_parse_params(params))
    gen = create_generator(gen_name or "gguf", **kw)
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ConfigError(f"environment variable {api_key_env} is empty", remedy="export it, or leave out --api-key-env")
    click.echo(f"ragmed: loading {gen.model_id} …", err=True)
    gen.warm_up()
    click.echo(f"ragmed: serving {model_name or gen.model_id} at http://{host}:{port}/v1 (Ctrl-C stops)", err=True)
    run(gen, host=host, port=port, model_name=model_name, api_key=api_key, warm_up=False)


@serve.command("api")
@click.option("--index", "index_dir", type=click.Path(), default="indexes/default", show_default=True)
@click.option("--pipeline", default=None, help="pipelines/NAME.yaml or a name (default: the one that built the index).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--api-key-env", default=None, metavar="VAR",
              help="Require 'Authorization: Bearer $VAR' (the key is read from this environment variable).")
@click.option("--max-upload-mb", default=64.0, show_default=True, type=float)
def serve_api(index_dir, pipeline, host, port, api_key_env, max_upload_mb):
    """Answer questions about uploaded images over HTTP: POST /v1/ask, POST /v1/retrieve, GET /health."""
    import os

    from ragmed.errors import ConfigError
    from ragmed.pipeline import Pipeline
    from ragmed.serve.api import run

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ConfigError(f"environment variable {api_key_env} is empty", remedy="export it, or leave out --api-key-env")
    p = Pipeline.for_index(index_dir, pipeline)
    click.echo(f"ragmed: loading the {p.config.name} pipeline and the index {index_dir} …", err=True)
    click.echo(f"ragmed: serving http://{host}:{port}/v1/ask (Ctrl-C stops)", err=True)
    run(p, host=host, port=port, api_key=api_key, max_upload_mb=max_upload_mb)
