"""HTTP services (FastAPI and uvicorn come with ``pip install 'ragmed[serve]'``):

- ``ragmed.serve.api``: question answering over an index for decision-support apps (``ragmed serve api``:
  ``POST /v1/ask``, ``POST /v1/retrieve``, thumbnails, ``/health``, ``/readyz``, ``/metrics``, ``/docs``), hardened by
  ``ragmed.serve.guard`` (API keys, bounded queue, body limits and timeouts, request ids, JSON logs) and measured by
  ``ragmed.serve.metrics`` (Prometheus);
- ``ragmed.serve.cds``: CDS Hooks 2.0 services (JWT-authenticated) on the same app;
- ``ragmed.serve.fhir``: answers as FHIR R4B DiagnosticReport / GuidanceResponse;
- ``ragmed.serve.viewer``: the evidence viewer page (``/viewer``);
- ``ragmed.serve.openai_server``: an OpenAI-compatible chat-completions server for ragmed's local generators
  (``ragmed serve openai``);
- ``ragmed.serve.process``: either one as a child process on 127.0.0.1."""


def __getattr__(name: str):
    """The names ``ragmed serve`` (the CLI) uses, resolved on first use so that ``import ragmed.serve`` stays cheap."""
    if name in ("ServiceSettings", "read_api_keys", "run", "create_app"):
        from ragmed.serve import api
        return getattr(api, name)
    if name == "CdsSettings":
        from ragmed.serve.cds import CdsSettings
        return CdsSettings
    if name == "run_openai":
        from ragmed.serve.openai_server import run
        return run
    raise AttributeError(f"module 'ragmed.serve' has no attribute {name!r}")
