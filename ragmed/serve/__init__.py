"""HTTP services. ``ragmed.serve.openai_server``: an OpenAI-compatible chat-completions server for ragmed's local
generators (``ragmed serve openai``). FastAPI and uvicorn come with ``pip install 'ragmed[serve]'``."""
