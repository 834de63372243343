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
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (loopback by default).")
@click.option("--port", default=8000, show_default=True, type=int, help="TCP port.")
@click.option("--model-name", default=None, help="Model id to serve under (default: the generator's id).")
@click.option("--api-key-env", default=None, metavar="VAR",
              help="Require 'Authorization: Bearer $VAR' (the key is read from this environment variable).")
def serve_openai(gen_name, params, pipeline, host, port, model_name, api_key_env):
    """Serve a local generator as an OpenAI-compatible /v1/chat/completions endpoint."""
    import os

    from ragmed.errors import ConfigError
    from ragmed.generate import create_generator
    from ragmed.serve import run_openai as run

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
@click.option("--index", "index_dir", type=click.Path(), default="indexes/default", show_default=True, help="Index directory.")
@click.option("--pipeline", default=None, help="pipelines/NAME.yaml or a name (default: the one that built the index).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (loopback by default).")
@click.option("--port", default=8080, show_default=True, type=int, help="TCP port.")
@click.option("--api-key-env", default="RAGMED_API_KEYS", show_default=True, metavar="VAR",
              help="Environment variable holding the API key(s), comma-separated.")
@click.option("--api-key-file", default=None, type=click.Path(dir_okay=False),
              help="File with API keys, one per line.")
@click.option("--no-auth", is_flag=True, help="Serve without API keys (refused unless --host is a loopback address).")
@click.option("--max-upload-mb", default=64.0, show_default=True, type=float, help="Largest request body accepted, in MB (checked while it streams in).")
@click.option("--max-image-pixels", default=4096 * 4096 * 3, show_default=True, type=int,
              help="Most samples of the one image frame decoded per request (checked from the header first).")
@click.option("--max-question-chars", default=1000, show_default=True, type=int, help="Longest question accepted, in characters.")
@click.option("--workers", default=2, show_default=True, type=int, help="Requests worked on at once.")
@click.option("--queue", "queue_size", default=16, show_default=True, type=int,
              help="Requests that may wait for a worker; more get 503 + Retry-After.")
@click.option("--body-timeout", default=60.0, show_default=True, type=float,
              help="Seconds a request body may take to arrive (408 after).")
@click.option("--allow-names", is_flag=True, help="Evidence may carry the corpus file name of its image.")
@click.option("--corpus-root", default=None, type=click.Path(file_okay=False),
              help="The indexed corpus's image folder, for evidence thumbnails.")
@click.option("--dicomweb", "dicomweb_url", default=None, metavar="URL",
              help="DICOMweb root of the PACS for study references (e.g. http://pacs:8042/dicom-web).")
@click.option("--cds-jwks", default=None, type=click.Path(dir_okay=False),
              help="JWKS file with the EHR's public keys: enables CDS Hooks (/cds-services).")
@click.option("--cds-issuer", "cds_issuers", multiple=True, help="Accepted JWT issuer (repeatable).")
@click.option("--cds-audience", default=None, help="Expected JWT aud (default: the URL the EHR called).")
@click.option("--cds-config", default=None, type=click.Path(dir_okay=False),
              help="YAML with the CDS services (hook, question, prefetch); default: ragmed's imaging services.")
@click.option("--log-level", default="info", show_default=True, help="Log level of the service (JSON lines).")
def serve_api(index_dir, pipeline, host, port, api_key_env, api_key_file, no_auth, max_upload_mb, max_image_pixels,
              max_question_chars, workers, queue_size, body_timeout, allow_names, corpus_root, dicomweb_url, cds_jwks,
              cds_issuers, cds_audience, cds_config, log_level):
    """Answer questions about images over HTTP: /v1/ask, /v1/retrieve, /readyz, /metrics, /viewer, CDS Hooks."""
    import os

    from ragmed.pipeline import Pipeline
    from ragmed.serve import ServiceSettings, read_api_keys, run

    keys = read_api_keys(os.environ.get(api_key_env) if api_key_env else None, api_key_file)
    cds = None
    if cds_jwks:
        from ragmed.serve import CdsSettings

        cds = CdsSettings.load(jwks=cds_jwks, issuers=cds_issuers, audience=cds_audience, config=cds_config)
    s = ServiceSettings(api_keys=keys, no_auth=no_auth, host=host, max_upload_mb=max_upload_mb,
                        max_image_pixels=max_image_pixels, max_question_chars=max_question_chars, workers=workers,
                        queue=queue_size, body_timeout_s=body_timeout, chunk_timeout_s=min(10.0, body_timeout),
                        allow_names=allow_names,
                        corpus_root=corpus_root, dicomweb_url=dicomweb_url, cds=cds)
    s.check()
    p = Pipeline.for_index(index_dir, pipeline)
    click.echo(f"ragmed: loading the {p.config.name} pipeline and the index {index_dir} …", err=True)
    click.echo(f"ragmed: serving http://{host}:{port}/v1/ask (Ctrl-C stops)", err=True)
    run(p, s, factory=lambda: Pipeline.for_index(index_dir, pipeline), host=host, port=port, log_level=log_level)
