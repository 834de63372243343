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
