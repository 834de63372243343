"""ragmed's OpenAI-compatible server as a real process on 127.0.0.1, and the ``openai`` generator backend (the
official ``openai`` client) talking to it. The served model is a tiny randomly initialised LLaVA (a FAKE model:
gibberish answers, real formats), so that images travel as data URLs to a model that uses them; the real SmolLM2
behind the same server is tested in test_generate_gguf.py."""
from __future__ import annotations

import numpy as np
import pytest

from ragmed.errors import GeneratorError
from ragmed.serve.process import free_port, start_openai_server, stop_server  # noqa: F401 (used by other tests)
from ragmed.generate import create_generator
from ragmed.types import Evidence

pytest.importorskip("openai")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

EVIDENCE = [Evidence("c1", 0.05, "[1]", "Q: Is there a pneumothorax? A: no."),
            Evidence("c2", 0.04, "[2]", "The heart size is normal. No pneumothorax.")]


def start_server(args: list[str], env: dict | None = None, timeout: float = 120.0):
    """``ragmed serve openai ARGS`` as a child process; returns (process, base_url) once /health answers."""
    return start_openai_server(args, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from ragmed.generate.testing import write_tiny_llava

    model_dir = write_tiny_llava(tmp_path_factory.mktemp("serve") / "fake-tiny-llava")
    proc, url = start_server(["--generator", "transformers", "-p", f"path={model_dir}", "--model-name", "tiny-vlm",
                              "--api-key-env", "RAGMED_TEST_KEY"], env={"RAGMED_TEST_KEY": "sekret"})
    yield url
    stop_server(proc)


def test_models_and_auth(server):
    h = {"Authorization": "Bearer sekret"}
    r = httpx.get(server + "/v1/models", headers=h)
    assert r.status_code == 200 and r.json()["data"][0]["id"] == "tiny-vlm"
    r = httpx.get(server + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(server + "/v1/chat/completions", headers=h, json={"model": "other", "messages": [
        {"role": "user", "content": "hi"}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(server + "/v1/chat/completions", headers=h, json={"model": "tiny-vlm", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


def test_raw_completion_and_sse_stream(server):
    h = {"Authorization": "Bearer sekret"}
    body = {"model": "tiny-vlm", "messages": [{"role": "user", "content": "is there a lesion ?"}], "max_tokens": 5}
    r = httpx.post(server + "/v1/chat/completions", headers=h, json=body, timeout=60)
    out = r.json()
    assert r.status_code == 200 and out["object"] == "chat.completion"
    assert out["choices"][0]["message"]["role"] == "assistant" and out["usage"]["completion_tokens"] == 5
    with httpx.stream("POST", server + "/v1/chat/completions", headers=h, json={**body, "stream": True},
                      timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    import json

    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed.strip() == out["choices"][0]["message"]["content"]  # greedy: stream and non-stream agree
    # an image as a data URL reaches the VLM: one prompt token per image patch ((32 / 8)^2 = 16) more
    from ragmed.generate.chat import data_url, to_pil

    url = data_url(to_pil(np.full((20, 20), 128, np.uint8)))
    with_img = {**body, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "is there a lesion ?"}]}]}
    r2 = httpx.post(server + "/v1/chat/completions", headers=h, json=with_img, timeout=60).json()
    assert r2["usage"]["prompt_tokens"] - out["usage"]["prompt_tokens"] == 16
    bad = {**with_img, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://example.org/x.png"}}]}]}
    r3 = httpx.post(server + "/v1/chat/completions", headers=h, json=bad, timeout=60)
    assert r3.status_code == 400 and "data: URLs" in r3.json()["error"]["message"]


def test_openai_backend_against_the_server(server, monkeypatch):
    monkeypatch.setenv("RAGMED_TEST_KEY", "sekret")
    img = np.random.default_rng(1).integers(0, 255, (30, 40), dtype=np.uint8)
    plain = create_generator("openai", base_url=server + "/v1", api_key_env="RAGMED_TEST_KEY", max_new_tokens=6)
    a = plain.generate("Is there a pneumothorax?", EVIDENCE, [], image=img, task="open")
    assert plain.model == "tiny-vlm"  # taken from /v1/models
    assert a.model == f"openai:tiny-vlm@{server}/v1" and a.text
    assert set(a.citations) <= {"[1]", "[2]"} and (a.citations or "uncited" in a.flags)
    streamed = create_generator("openai", base_url=server + "/v1", model="tiny-vlm", api_key_env="RAGMED_TEST_KEY",
                                stream=True, max_new_tokens=6)
    b = streamed.generate("Is there a pneumothorax?", EVIDENCE, [], image=img, task="open")
    assert b.text == a.text  # same greedy answer over SSE
    # the image travels as a PNG data URL in an image_url part
    msgs = plain._wire_messages(plain.messages_for("Is there a pneumothorax?", EVIDENCE, [], image=img))
    part = msgs[-1]["content"][0]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,")


def test_openai_backend_errors_are_typed(server, monkeypatch):
    monkeypatch.setenv("RAGMED_TEST_KEY", "wrong")
    g = create_generator("openai", base_url=server + "/v1", model="tiny-vlm", api_key_env="RAGMED_TEST_KEY",
                         max_retries=0)
    with pytest.raises(GeneratorError, match="refused the API key.*RAGMED_TEST_KEY"):
        g.generate("Is there a pneumothorax?", EVIDENCE, [])
    monkeypatch.setenv("RAGMED_TEST_KEY", "sekret")
    g = create_generator("openai", base_url=server + "/v1", model="no-such-model", api_key_env="RAGMED_TEST_KEY",
                         max_retries=0)
    with pytest.raises(GeneratorError, match="HTTP 404"):
        g.generate("Is there a pneumothorax?", EVIDENCE, [])
    dead = create_generator("openai", base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", max_retries=1,
                            timeout=2)
    with pytest.raises(GeneratorError, match="cannot reach the chat endpoint.*ragmed serve openai"):
        dead.generate("Is there a pneumothorax?", EVIDENCE, [])  # retried with backoff, then a typed error


def test_serving_a_model_less_generator_is_refused():
    from ragmed.errors import ConfigError
    from ragmed.serve.openai_server import create_app

    with pytest.raises(ConfigError, match="cannot serve chat completions"):
        create_app(create_generator("vote"))
