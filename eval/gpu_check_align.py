"""GPU recipe check for ``ragmed align train`` on a 7B VLM: peak memory and time per DPO + LoRA step.

    PYTHONPATH=. python3 eval/gpu_check_align.py --out $OUT/align_gpu.json          # on the GPU machine
    PYTHONPATH=. python eval/gpu_check_align.py --tiny --out /tmp/align_gpu_tiny.json  # here, on a CPU

What it builds (no weights exist on that machine, so from configs, randomly initialised, bf16 on a GPU): a LLaVA-1.5
shaped model — the text side Llama-2-7B's dimensions (hidden 4096, 32 layers, 32 heads, MLP 11008, vocabulary
32064), the vision side CLIP ViT-L/14-336's (hidden 1024, 24 layers, 16 heads, MLP 4096, 336 px, patch 14: 576
image tokens), LLaVA's two-layer projector. Memory and time of a step depend on these shapes, not on the values.
The tokenizer is a byte-level BPE trained here on the synthetic text (Llama's tokenizer files are not on the
machine either); only the prompt's length in tokens matters.

What it runs: :func:`ragmed.align.train.train_dpo` — the function behind ``ragmed align train``, with its
``WeightedDPOTrainer`` subclass of TRL's ``DPOTrainer``, :class:`~ragmed.align.train.PairCollator` (a different
image per side), the LoRA target selection (language model only) and its DPO configuration — on a synthetic pair
file: real-size images (512 × 512 PNG, resized by the CLIP processor to 336), prompts of about ``--prompt-tokens``
text tokens (1,000 by default) plus the 576 image tokens, one-word answers, a third of the pairs cross-modality
(noise image on the rejected side), weights as MMedPO-style pairs carry. The only stand-in is
:class:`SyntheticGenerator`, which hands train_dpo the model and processor a pipeline generator would (plumbing).

For each setting (batch 1 and 4, gradient checkpointing off, then batch 4 with it on) a fresh process builds a fresh model, a few
steps run (the first is warm-up and not counted), and the JSON gets: peak GPU memory (allocated and reserved),
seconds per step (median of the timed steps), tokens per sequence, settings, versions; an out-of-memory is recorded
as such. Imports: torch, transformers, peft, accelerate, numpy, pillow, tokenizers (a transformers dependency), trl
and what trl imports (datasets and its dependencies); ragmed's own modules on that path import nothing else (checked
by ``--tiny``, which lists every top-level module imported).
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

CHAT_TEMPLATE = (
    "{%- for m in messages -%}{{ '<|im_start|>' + m['role'] + '\\n' }}"
    "{%- if m['content'] is string -%}{{ m['content'] }}{%- else -%}{%- for p in m['content'] -%}"
    "{%- if p['type'] == 'image' -%}{{ '<image>' }}{%- elif p['type'] == 'text' -%}{{ p['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{{ '<|im_end|>\\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}")
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<|im_start|>", "<|im_end|>"]

FULL = dict(text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096),
            vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                        image_size=336, patch_size=14, projection_dim=768),
            tok_vocab=8000)
TINY = dict(text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=2048, max_position_embeddings=1024),
            vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        image_size=56, patch_size=14, projection_dim=32),
            tok_vocab=1000)


class SyntheticGenerator:
    """Plumbing stand-in for a pipeline's transformers generator: the attributes train_dpo reads (model, processor,
    is_vlm, model_id, path, adapter, warm_up). Named as such; the training code it feeds is ragmed's own."""

    def __init__(self, model, processor, model_id: str):
        self.model, self.processor, self.tokenizer = model, processor, processor.tokenizer
        self.is_vlm, self.model_id, self.path, self.adapter = True, model_id, None, None

    def warm_up(self) -> None:
        pass


def words(rng: random.Random, n: int) -> str:
    syl = ["ra", "di", "o", "lu", "cent", "pul", "mo", "nar", "ef", "fu", "sion", "car", "dio", "me", "ga", "ly",
           "no", "dule", "opa", "ci", "ty", "le", "sion", "hi", "lar", "ad", "eno", "pa", "thy", "mass"]
    return " ".join("".join(rng.choice(syl) for _ in range(rng.randint(1, 3))) for _ in range(n))


def build_tokenizer(vocab: int, rng: random.Random):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS, show_progress=False)
    tk.train_from_iterator((words(rng, 200) for _ in range(200)), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", additional_special_tokens=SPECIALS[4:])


def build_model(shape: dict, tok, device: str, dtype):
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, \
        LlavaForConditionalGeneration, LlavaProcessor

    image_id = tok.convert_tokens_to_ids("<image>")
    v = shape["vision"]
    grid = v["image_size"] // v["patch_size"]
    config = LlavaConfig(vision_config=CLIPVisionConfig(**v), text_config=LlamaConfig(**shape["text"]),
                         image_token_index=image_id, image_seq_length=grid * grid, projector_hidden_act="gelu",
                         vision_feature_select_strategy="default", vision_feature_layer=-2)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype)
    model.eval()
    ip = CLIPImageProcessor(size={"shortest_edge": v["image_size"]},
                            crop_size={"height": v["image_size"], "width": v["image_size"]})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=v["patch_size"],
                          vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE, image_token="<image>",
                          num_additional_image_tokens=1)
    return model, proc


def write_pairs(root: Path, n: int, prompt_words: int, side: int, rng: random.Random) -> Path:
    """A pair file in ``ragmed align pairs``' format, and its images (real-size PNG, smooth random)."""
    import numpy as np
    from PIL import Image

    imgs = root / "images"
    imgs.mkdir(parents=True, exist_ok=True)
    nrng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        small = nrng.integers(0, 256, size=(side // 32, side // 32), dtype=np.uint8)
        Image.fromarray(small).resize((side, side), Image.BILINEAR).convert("RGB").save(imgs / f"img{i}.png")
        gold = rng.choice(["yes", "no"])
        other = "no" if gold == "yes" else "yes"
        cross = i % 3 == 0
        prompt = [{"role": "system", "content": "You answer questions about a medical image using only the "
                                                "numbered evidence from similar cases."},
                  {"role": "user", "content": f"Evidence:\n{words(rng, prompt_words)}\nQuestion: is there a "
                                              f"{words(rng, 2)}?\nAnswer:"}]
        lines.append({"type": "pair", "id": f"q{i}:{'cross-modality' if cross else 'hallucination'}:0",
                      "qid": f"q{i}", "kind": "cross-modality" if cross else "hallucination",
                      "image": f"img{i}.png", "task": "closed", "prompt": prompt,
                      "chosen": gold.capitalize() + ".", "rejected": (gold if cross else other).capitalize() + ".",
                      "rejected_image": {"noise": i} if cross else None,
                      "weight": 1.0 if cross else round(rng.uniform(0.5, 1.5), 3)})
    p = root / "pairs.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in lines))
    (root / "pairs.jsonl.meta.json").write_text(json.dumps({"images": str(imgs), "synthetic": True}))
    return p


def one_setting(shape: dict, batch: int, gc: bool, steps: int, prompt_words: int, device: str, work: Path,
                seed: int = 0) -> dict:
    import torch

    from ragmed.align.train import TrainOptions, train_dpo

    rng = random.Random(seed)
    tok = build_tokenizer(shape["tok_vocab"], rng)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cuda = device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model, proc = build_model(shape, tok, device, dtype)
    t_build = time.perf_counter() - t0
    mem_model = torch.cuda.memory_allocated() / 2**30 if cuda else None
    n_params = sum(p.numel() for p in model.parameters())
    root = work / f"b{batch}_gc{int(gc)}"
    pairs = write_pairs(root, batch * (steps + 1), prompt_words, 512, rng)
    # tokens per sequence, as the collator renders them (prompt + answer, image tokens included)
    from ragmed.align.train import PairCollator, to_dataset

    opts = TrainOptions(batch_size=batch, max_steps=steps + 1, save_steps=10_000, lora_r=16, lora_alpha=32,
                        gradient_checkpointing=gc, images=str(root / "images"), max_length=4096, lr=5e-5)
    from ragmed.align.pairs import read_pairs

    ds = to_dataset(read_pairs(pairs), opts, vlm=True)
    enc = PairCollator(proc, str(root / "images"), None)([ds[0]])
    seq_tokens = int(enc["attention_mask"][0].sum())
    image_tokens = int((enc["input_ids"][0] == tok.convert_tokens_to_ids("<image>")).sum())
    res = {"batch_size": batch, "gradient_checkpointing": gc, "steps_run": steps + 1, "seq_tokens": seq_tokens,
           "image_tokens": image_tokens, "text_tokens": seq_tokens - image_tokens, "params": n_params,
           "dtype": str(dtype).replace("torch.", ""), "build_seconds": round(t_build, 1),
           "model_memory_gib": None if mem_model is None else round(mem_model, 2)}
    gen = SyntheticGenerator(model, proc, "synthetic-llava-7b-shape" if shape is FULL else "synthetic-llava-tiny")
    try:
        card = train_dpo(gen, pairs, root / "run", opts)
        log = [json.loads(x) for x in (root / "run" / "log.jsonl").read_text().splitlines()]
        st = [h["step_seconds"] for h in log if "step_seconds" in h]
        timed = sorted(st[1:]) or st
        res.update({"ok": True, "seconds_per_step_median": timed[len(timed) // 2] if timed else None,
                    "seconds_first_step": st[0] if st else None, "step_seconds": st,
                    "losses": [h["loss"] for h in log if "loss" in h], "bf16": card["bf16"],
                    "lora": {k: card["hyper_parameters"][k] for k in ("lora_r", "lora_alpha", "lora_targets")},
                    "trainable_params": sum(p.numel() for p in gen.model.parameters() if p.requires_grad)})
    except torch.OutOfMemoryError as e:
        res.update({"ok": False, "error": f"out of memory: {str(e).splitlines()[0]}"})
    if cuda:
        res["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        res["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    del gen, model
    if cuda:
        torch.cuda.empty_cache()
    return res


def shown_args(args: list[str]) -> list[str]:
    """The arguments as recorded in the JSON: the output path's folder replaced by OUT (no machine paths)."""
    return [f"OUT/{Path(x).name}" if i and args[i - 1] == "--out" else x for i, x in enumerate(args)]


def run_one(a) -> int:
    """One batch:gradient-checkpointing setting in this process (what ``main`` runs in a fresh process each)."""
    import torch

    before = set(sys.modules)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = TINY if a.tiny else FULL
    prompt_words = max(20, round(a.prompt_tokens * 0.62)) if not a.tiny else 60
    b, gc = (int(x) for x in a.one.split(":"))
    with tempfile.TemporaryDirectory(prefix="align_gpu_one_") as tmp:
        r = one_setting(shape, b, bool(gc), a.steps, prompt_words, device, Path(tmp))
    r["imported_top_level"] = sorted({m.split(".")[0] for m in set(sys.modules) - before if not m.startswith("_")})
    Path(a.out).write_text(json.dumps(r))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="shrink everything (a CPU check of the plumbing)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per setting (after one warm-up step)")
    ap.add_argument("--prompt-tokens", type=int, default=1000, help="about this many text tokens of evidence")
    ap.add_argument("--settings", default="1:0,4:0,4:1", help="batch:gradient-checkpointing, comma-separated")
    ap.add_argument("--out", required=True)
    ap.add_argument("--one", metavar="BATCH:GC", help=argparse.SUPPRESS)  # internal: one setting, in this process
    a = ap.parse_args(argv)
    if a.one:
        return run_one(a)
    before = set(sys.modules)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = TINY if a.tiny else FULL
    # ≈ 1.55 BPE tokens a synthetic word with the 8,000-token vocabulary (measured: 500 words → 774 text tokens)
    prompt_words = max(20, round(a.prompt_tokens * 0.62)) if not a.tiny else 60
    out: dict = {"task": "align-gpu-check", "command": "python " + " ".join(["eval/gpu_check_align.py"] + shown_args(sys.argv[1:])),
                 "shape": "tiny" if a.tiny else "llava-1.5-7b (Llama-2-7B text + CLIP ViT-L/14-336 vision), random",
                 "device": device, "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
                 "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
                 if device == "cuda" else None, "python": platform.python_version(), "runs": []}
    # each setting in a fresh process: a model the trainer still references would otherwise count in the next
    # setting's peak memory (seen on the first GPU run: 13 GiB left over from batch 1 in batch 4's peak)
    import subprocess

    with tempfile.TemporaryDirectory(prefix="align_gpu_") as tmp:
        for s in a.settings.split(","):
            res = Path(tmp) / f"run-{s.replace(':', '_')}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one", s, "--steps", str(a.steps),
                   "--prompt-tokens", str(a.prompt_tokens), "--out", str(res)] + (["--tiny"] if a.tiny else [])
            t = time.perf_counter()
            proc = subprocess.run(cmd, check=False)
            if res.exists():
                r = json.loads(res.read_text())
            else:
                r = {"setting": s, "ok": False, "error": f"the setting's process exited with {proc.returncode}"}
            r["wall_seconds"] = round(time.perf_counter() - t, 1)
            print(json.dumps(r), flush=True)
            out["runs"].append(r)
    import importlib.metadata as md

    out["versions"] = {}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "numpy", "pillow", "tokenizers"):
        try:
            out["versions"][pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out["versions"][pkg] = None
    out["imported_top_level"] = sorted({m.split(".")[0] for m in set(sys.modules) - before if not m.startswith("_")}
                                       | {m for r in out["runs"] for m in r.pop("imported_top_level", [])})
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}")
    return 0 if all(r.get("ok") for r in out["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
