"""A small OpenAI-compatible chat-completions server for ragmed's own local generators (``gguf``, ``transformers``),
so that other tools — and ragmed's ``openai`` backend — can use them over HTTP.

    ragmed serve openai --generator gguf --port 8000
    curl http://127.0.0.1:8000/v1/chat/completions -d '{"model": "...", "messages": [...]}'

Routes: ``GET /v1/models``, ``POST /v1/chat/completions`` (``stream: true`` answers with server-sent events:
``chat.completion.chunk`` objects, then ``data: [DONE]``), ``GET /health``. Errors use the OpenAI error body
``{"error": {"message", "type", "param", "code"}}``. Images come as ``data:`` URLs in ``image_url`` parts (no
network fetches); a text-only model does not see them. One request generates at a time (the model holds a lock).
"""
from __future__ import annotations

import json
import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ragmed.errors import ConfigError, RagmedError

DEFAULT_MAX_TOKENS = 128


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # top_p, presence_penalty … are accepted and ignored
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = 1


def _error(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
           param: str | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status,
                        content={"error": {"message": message, "type": type_, "param": param, "code": code}})


def create_app(generator, model_name: str | None = None, api_key: str | None = None,
               max_tokens_limit: int = 1024):
    """The FastAPI app serving ``generator`` (a :class:`~ragmed.generate.chat.ChatGenerator`) under
    ``model_name`` (default: its model id). With ``api_key``, requests must send ``Authorization: Bearer KEY``."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import StreamingResponse

    if not hasattr(generator, "chat"):
        raise ConfigError(f"generator {getattr(generator, 'id', generator)!r} cannot serve chat completions",
                          remedy="serve a model backend: --generator gguf or --generator transformers")
    name = model_name or generator.model_id
    app = FastAPI(title="ragmed OpenAI-compatible server", version="1")
    app.state.generator, app.state.model_name = generator, name

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):  # OpenAI-style 400 instead of FastAPI's 422
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(x) for x in first.get("loc", ())[1:])
        return _error(400, f"{loc}: {first.get('msg', 'invalid request')}" if loc else "invalid request", param=loc)

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            got = request.headers.get("authorization", "")
            if not secrets.compare_digest(got, f"Bearer {api_key}"):
                return _error(401, "invalid API key", type_="authentication_error", code="invalid_api_key")
        return await call_next(request)

    @app.get("/health")
    def health():
        return {"status": "ok", "model": name}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ragmed"}]}

    @app.get("/v1/models/{model_id:path}")
    def model(model_id: str):
        if model_id != name:
            return _error(404, f"The model '{model_id}' does not exist", code="model_not_found", param="model")
        return {"id": name, "object": "model", "created": 0, "owned_by": "ragmed"}

    @app.post("/v1/chat/completions")
    def chat_completions(req: ChatRequest):
        if req.model != name:
            return _error(404, f"The model '{req.model}' does not exist; this server serves '{name}'",
                          code="model_not_found", param="model")
        if req.n != 1:
            return _error(400, "only n=1 is supported", param="n")
        max_new = min(req.max_completion_tokens or req.max_tokens or DEFAULT_MAX_TOKENS, max_tokens_limit)
        stop = [req.stop] if isinstance(req.stop, str) else (req.stop or None)
        msgs = [m.model_dump(exclude_none=True) for m in req.messages]
        for m in msgs:
            m.setdefault("content", "")
        kw = dict(max_new_tokens=max_new, temperature=req.temperature if req.temperature is not None else 0.0,
                  seed=req.seed, stop=stop)
        cid = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        if req.stream:
            try:
                generator.warm_up()
                pieces = generator.stream(msgs, **kw)
            except RagmedError as e:
                return _error(400, str(e))
            return StreamingResponse(_sse(pieces, cid, created, name), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            res = generator.chat(msgs, **kw)
        except RagmedError as e:
            return _error(400, str(e))
        return {
            "id": cid, "object": "chat.completion", "created": created, "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": res.text},
                         "logprobs": None, "finish_reason": res.finish_reason}],
            "usage": {"prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
                      "total_tokens": res.prompt_tokens + res.completion_tokens},
        }

    return app


def _sse(pieces, cid: str, created: int, model: str):
    """Server-sent events as OpenAI sends them. (No usage chunk: token counts are not tracked while streaming.)"""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return f"data: {json.dumps(body)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        for piece in pieces:
            yield chunk({"content": piece})
    except RagmedError as e:  # the stream has started: report in-band, as OpenAI does
        yield f"data: {json.dumps({'error': {'message': str(e), 'type': 'server_error'}})}\n\n"
        return
    yield chunk({}, "stop")
    yield "data: [DONE]\n\n"


def run(generator, *, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None,
        api_key: str | None = None, warm_up: bool = True, log_level: str = "warning") -> None:
    """Load the model (unless ``warm_up=False``) and serve until interrupted."""
    import uvicorn

    if warm_up:
        generator.warm_up()
    uvicorn.run(create_app(generator, model_name=model_name, api_key=api_key), host=host, port=port,
                log_level=log_level)
