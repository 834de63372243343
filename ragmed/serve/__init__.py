"""HTTP services (FastAPI and uvicorn come with ``pip install 'ragmed[serve]'``):

- ``ragmed.serve.api``: question answering over an index for decision-support apps (``ragmed serve api``:
  ``POST /v1/ask``, ``POST /v1/retrieve``);
- ``ragmed.serve.openai_server``: an OpenAI-compatible chat-completions server for ragmed's local generators
  (``ragmed serve openai``);
- ``ragmed.serve.process``: either one as a child process on 127.0.0.1."""
