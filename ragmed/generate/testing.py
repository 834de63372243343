"""Tiny, randomly initialised models for plumbing tests — FAKE models: they produce gibberish. They exist so that the
``transformers`` and ``openai`` backends (and the OpenAI-compatible server) can be tested end to end, in the exact
on-disk formats real checkpoints use, in a second and without any download.

``write_tiny_causal_lm(dir)``: a 2-layer Llama with a word-level tokenizer and a chat template.
``write_tiny_llava(dir)``: a LLaVA (CLIP vision tower + Llama) with its processor, image token and chat template.
"""
from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
WORDS = ("yes no the a of in is are there evidence question answer cite left right lung heart lobe normal "
         "effusion pneumothorax consolidation chest x ray ct mri brain liver kidney mass lesion q findings report "
         "similar cases image medical using only numbered with then one word options like short few words it comes "
         "from knowledge none upper lower size enlarged").split()
SPECIAL = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>", "<image>"]


def tiny_tokenizer():
    """A word-level fast tokenizer (a few hundred tokens) with a chat template; no download."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL)}
    for w in list(WORDS) + [str(i) for i in range(10)] + list("[]().,:?!'-/\n") + ["K", "Q", "A"]:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    from tokenizers import decoders

    tk.decoder = decoders.WordPiece(prefix="##")  # joins with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<|im_start|>",
                                  eos_token="<|im_end|>", additional_special_tokens=["<image>"])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _llama_config(vocab: int, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=1,
                       bos_token_id=2, eos_token_id=3, **kw)


def write_tiny_causal_lm(out: str | Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaForCausalLM

    out = Path(out)
    tok = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's global RNG state
        torch.manual_seed(seed)
        model = LlamaForCausalLM(_llama_config(len(tok)))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_tiny_llava(out: str | Path, seed: int = 0, image_size: int = 32, patch_size: int = 8) -> Path:
    import torch
    import transformers
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    # the PIL image processor (the default one needs torchvision)
    CLIPImageProcessor = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor

    out = Path(out)
    tok = tiny_tokenizer()
    image_token_id = tok.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=image_size, patch_size=patch_size, projection_dim=32)
    cfg = LlavaConfig(vision_config=vision, text_config=_llama_config(len(tok)), image_token_index=image_token_id,
                      vision_feature_select_strategy="default", vision_feature_layer=-1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(cfg)
    model.save_pretrained(out)
    ip = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                            do_center_crop=True)
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=patch_size,
                          vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE, image_token="<image>",
                          num_additional_image_tokens=1)
    proc.save_pretrained(out)
    return out
