"""The ``openai`` backend: any OpenAI-compatible chat-completions endpoint the user runs (vLLM, Ollama, TGI, or
ragmed's own ``ragmed serve openai``), spoken through the official ``openai`` client (``pip install 'ragmed[llm]'``).

Parameters (``generator.params``): ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``), ``model`` (default: the first
model the endpoint lists), ``api_key_env`` (the *name* of the environment variable holding the key; the key itself
never goes into a pipeline file or a log), ``timeout`` (seconds per request), ``max_retries`` (the client retries
connection errors, 408/409/429 and 5xx with exponential backoff), ``stream`` (receive the answer as server-sent
events), ``images`` (send the query image as a PNG data URL: for vision-language endpoints; ``false`` for a
text-only model), ``image_max_side``, ``extra_body`` (vendor options passed through), plus every
:class:`~ragmed.generate.chat.ChatGenerator` parameter.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from ragmed.errors import ConfigError, GeneratorError
from ragmed.generate.chat import ChatGenerator, ChatResult, data_url, to_pil


def _client_module():
    try:
        import openai
    except ImportError as e:
        raise GeneratorError("the openai generator needs the openai package",
                             remedy="pip install 'ragmed[llm]' (or pip install openai)") from e
    return openai


class OpenAIGenerator(ChatGenerator):
    id = "openai"

    def __init__(self, base_url: str = "http://127.0.0.1:8000/v1", model: str | None = None, *,
                 api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0, max_retries: int = 3,
                 stream: bool = False, images: bool = True, image_max_side: int = 768,
                 extra_body: dict[str, Any] | None = None, **common: Any):
        super().__init__(**common)
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"generator param base_url={base_url!r} is not an http(s) URL",
                              remedy="e.g. base_url: http://127.0.0.1:8000/v1")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self.use_stream = bool(stream)
        self.images = bool(images)
        self.image_max_side = int(image_max_side)
        self.extra_body = dict(extra_body or {})
        self.client = None

    @property
    def accepts_images(self) -> bool:  # type: ignore[override]
        return self.images

    @property
    def model_id(self) -> str:
        return f"openai:{self.model or '?'}@{self.base_url}"

    def _load(self) -> None:
        openai = _client_module()
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        # local servers take any key; the client insists on one
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key or "not-needed", timeout=self.timeout,
                                    max_retries=self.max_retries)
        if not self.model:
            models = self._call(lambda: self.client.models.list())
            ids = [m.id for m in models.data]
            if not ids:
                raise GeneratorError(f"the endpoint {self.base_url} lists no models",
                                     remedy="set generator.params.model")
            self.model = ids[0]

    def _call(self, fn):
        openai = _client_module()
        try:
            return fn()
        except openai.AuthenticationError as e:
            raise GeneratorError(f"{self.base_url} refused the API key (HTTP {e.status_code})",
                                 remedy=f"put the key in the environment variable {self.api_key_env}") from None
        except openai.APITimeoutError:
            raise GeneratorError(f"{self.base_url} did not answer within {self.timeout:g} s "
                                 f"({self.max_retries} retries)", remedy="raise generator.params.timeout") from None
        except openai.APIConnectionError as e:
            raise GeneratorError(f"cannot reach the chat endpoint {self.base_url}: {e.__cause__ or e}",
                                 remedy="start the server (e.g. `ragmed serve openai`) or fix "
                                        "generator.params.base_url") from None
        except openai.APIStatusError as e:
            msg = e.message if isinstance(e.message, str) else str(e)
            raise GeneratorError(f"{self.base_url} answered HTTP {e.status_code}: {msg}") from None

    def _wire_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for m in messages:
            c = m.get("content")
            if isinstance(c, list):
                parts = []
                for p in c:
                    if p.get("type") == "image":
                        if self.images:
                            parts.append({"type": "image_url",
                                          "image_url": {"url": data_url(to_pil(p["image"], self.image_max_side))}})
                    else:
                        parts.append(p)
                c = parts
            out.append({"role": m["role"], "content": c})
        return out

    def _request(self, messages, max_new_tokens, temperature, seed, stop) -> dict[str, Any]:
        t = self.temperature if temperature is None else float(temperature)
        kw: dict[str, Any] = dict(model=self.model, messages=self._wire_messages(messages),
                                  max_tokens=int(max_new_tokens), temperature=t)
        if t > 0 or seed is not None:
            kw["seed"] = self.seed if seed is None else int(seed)
        if stop:
            kw["stop"] = list(stop)
        if self.extra_body:
            kw["extra_body"] = self.extra_body
        return kw

    def chat(self, messages: list[dict[str, Any]], *, max_new_tokens: int = 64, temperature: float | None = None,
             seed: int | None = None, stop: list[str] | None = None) -> ChatResult:
        self.warm_up()
        if self.use_stream:
            text = "".join(self.stream(messages, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                       stop=stop))
            return ChatResult(text=text.strip())
        kw = self._request(messages, max_new_tokens, temperature, seed, stop)
        resp = self._call(lambda: self.client.chat.completions.create(**kw))
        if not resp.choices:
            raise GeneratorError(f"{self.base_url} returned no choices")
        ch = resp.choices[0]
        u = resp.usage
        return ChatResult(text=(ch.message.content or "").strip(), prompt_tokens=getattr(u, "prompt_tokens", 0) or 0,
                          completion_tokens=getattr(u, "completion_tokens", 0) or 0,
                          finish_reason=ch.finish_reason or "stop")

    def stream(self, messages: list[dict[str, Any]], *, max_new_tokens: int = 64, temperature: float | None = None,
               seed: int | None = None, stop: list[str] | None = None) -> Iterator[str]:
        self.warm_up()
        kw = self._request(messages, max_new_tokens, temperature, seed, stop)
        events = self._call(lambda: self.client.chat.completions.create(stream=True, **kw))
        openai = _client_module()
        try:
            for chunk in events:
                for ch in chunk.choices or []:
                    piece = getattr(ch.delta, "content", None)
                    if piece:
                        yield piece
        except openai.APIError as e:
            raise GeneratorError(f"the stream from {self.base_url} broke off: {e}") from None
