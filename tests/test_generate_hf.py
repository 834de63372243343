"""The ``transformers`` backend on tiny randomly initialised models (FAKE models, plumbing only: their answers are
gibberish) written by the test in the real checkpoint formats: a Llama causal LM and a LLaVA VLM."""
from __future__ import annotations

import numpy as np
import pytest

from ragmed.errors import ConfigError, ModelNotFoundError
from ragmed.generate import create_generator
from ragmed.types import Evidence, KnowledgeEvidence

pytest.importorskip("transformers")

EVIDENCE = [Evidence("c1", 0.05, "[1]", "Q: Is there a pneumothorax? A: no. Q: Is the heart enlarged? A: yes."),
            Evidence("c2", 0.04, "[2]", "The heart size is normal. No focal consolidation or pneumothorax.")]
KNOWLEDGE = [KnowledgeEvidence("DOID:1673", "pneumothorax", "DOID", ref="[K1]", text="Air in the pleural space.")]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from ragmed.generate.testing import write_tiny_causal_lm, write_tiny_llava

    root = tmp_path_factory.mktemp("tiny-models")
    return {"lm": write_tiny_causal_lm(root / "fake-tiny-llama"), "vlm": write_tiny_llava(root / "fake-tiny-llava")}


def test_tiny_causal_lm_answers_deterministically_with_grounding(tiny_models):
    g = create_generator("transformers", path=str(tiny_models["lm"]), max_new_tokens=6)
    g.warm_up()
    assert not g.is_vlm and g.model_id == "transformers:fake-tiny-llama"
    a = g.generate("Is there a pneumothorax?", EVIDENCE, KNOWLEDGE, task="open")
    b = g.generate("Is there a pneumothorax?", EVIDENCE, KNOWLEDGE, task="open")
    assert a.text == b.text and a.text  # greedy: the same answer twice
    assert set(a.citations) <= {"[1]", "[2]", "[K1]"}
    assert a.citations or "uncited" in a.flags  # gibberish is never passed off as cited
    # the chat template was applied: the prompt holds the template's role markers and the numbered evidence
    ids = g._inputs(g.messages_for("Is there a pneumothorax?", EVIDENCE, KNOWLEDGE, task="open"))["input_ids"][0]
    prompt = g.tokenizer.decode(ids)
    assert "<|im_start|>" in prompt and ("[ 1 ]" in prompt or "[1]" in prompt)


def test_sampling_is_seeded_and_leaves_global_rng_alone(tiny_models):
    import torch

    g = create_generator("transformers", path=str(tiny_models["lm"]), temperature=1.0, seed=3)
    msgs = [{"role": "user", "content": "is there a lesion ?"}]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = g.chat(msgs, max_new_tokens=8).text
    after = torch.rand(1)
    assert torch.equal(before, after)  # the caller's RNG stream is untouched
    assert a == g.chat(msgs, max_new_tokens=8).text  # same seed, same sample


def test_stream_matches_chat(tiny_models):
    g = create_generator("transformers", path=str(tiny_models["lm"]))
    msgs = [{"role": "user", "content": "is there a lesion ?"}]
    full = g.chat(msgs, max_new_tokens=6)
    assert full.completion_tokens == 6 and full.finish_reason == "length" and full.prompt_tokens > 3
    assert "".join(g.stream(msgs, max_new_tokens=6)).strip() == full.text


def test_tiny_vlm_sees_the_image(tiny_models):
    g = create_generator("transformers", path=str(tiny_models["vlm"]), max_new_tokens=5)
    g.warm_up()
    assert g.is_vlm and g.accepts_images
    img = np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8)  # grayscale, replicated to RGB
    msgs = g.messages_for("Is there a pneumothorax?", EVIDENCE, KNOWLEDGE, image=img, task="closed")
    inputs = g._inputs(msgs)
    image_id = g.tokenizer.convert_tokens_to_ids("<image>")
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 32, 32)
    assert int((inputs["input_ids"] == image_id).sum()) == (32 // 8) ** 2  # one token per patch
    out = g.generate("Is there a pneumothorax?", EVIDENCE, KNOWLEDGE, image=img, task="closed")
    assert out.model == "transformers:fake-tiny-llava"
    assert set(out.citations) <= {"[1]", "[2]", "[K1]"}
    # the image changes what the model computes
    import torch

    black = g._inputs(g.messages_for("Is there a pneumothorax?", EVIDENCE, [], image=np.zeros((40, 50), np.uint8)))
    white = g._inputs(g.messages_for("Is there a pneumothorax?", EVIDENCE, [], image=np.full((40, 50), 255, np.uint8)))
    with torch.inference_mode():
        lb, lw = g.model(**black).logits[0, -1], g.model(**white).logits[0, -1]
    assert not torch.allclose(lb, lw)


def test_text_lm_given_an_image_still_answers(tiny_models):
    g = create_generator("transformers", path=str(tiny_models["lm"]), max_new_tokens=4)
    out = g.generate("Is there a pneumothorax?", EVIDENCE, [], image=np.zeros((8, 8), np.uint8), task="open")
    assert out.text and not g.accepts_images


def test_missing_or_bad_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model directory.*generator.params.path"):
        create_generator("transformers", path=str(tmp_path / "nope")).warm_up()
    with pytest.raises(ConfigError, match="needs generator.params.path"):
        create_generator("transformers").warm_up()
    with pytest.raises(ConfigError, match="kind="):
        create_generator("transformers", path=str(tmp_path), kind="audio")


def test_constrained_choice_scores_whole_choices(tiny_models):
    import torch

    g = create_generator("transformers", path=str(tiny_models["lm"]))
    msgs = [{"role": "user", "content": "is there a lesion ?"}]
    pick, scores = g.choose(msgs, ["yes", "no"])
    assert pick in ("yes", "no") and set(scores) == {"yes", "no"} and pick == max(scores, key=scores.get)
    # a multi-token choice is scored by its whole continuation (cached prompt): equal to the direct log-probability
    _, s = g.choose(msgs, ["9 lung", "1 lobe"])
    prompt = g._inputs(msgs)["input_ids"]
    ids = g.tokenizer("9 lung", add_special_tokens=False)["input_ids"]
    assert len(ids) == 2
    with torch.inference_mode():
        logits = g.model(input_ids=torch.cat([prompt, torch.tensor([ids])], 1)).logits[0]
    lps = torch.log_softmax(logits.float(), -1)
    n = prompt.shape[1]
    direct = float(lps[n - 1, ids[0]] + lps[n, ids[1]])
    assert abs(s["9 lung"] - direct) < 1e-3


def test_closed_question_uses_the_constrained_choice(tiny_models):
    g = create_generator("transformers", path=str(tiny_models["lm"]))
    out = g.generate("Is there a pneumothorax?", EVIDENCE, [], task="closed")
    assert out.text.split()[0].rstrip(".") in ("Yes", "No")
    # the answer cites exactly the evidence that says the same, or is flagged uncited
    expected = {"No": ["[1]", "[2]"], "Yes": []}[out.text.split()[0].rstrip(".")]
    assert out.citations == expected and (expected or "uncited" in out.flags)


def test_warm_up_async_loads_once(tiny_models):
    g = create_generator("transformers", path=str(tiny_models["lm"]), max_new_tokens=3)
    th = g.warm_up_async()
    out = g.generate("Is there a pneumothorax?", EVIDENCE, [], task="open")  # waits on the loader's lock
    th.join()
    assert g._ready and g.model is not None and out.text
