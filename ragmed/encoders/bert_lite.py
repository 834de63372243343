"""A lean loader for BERT-architecture sentence-transformers models (all-MiniLM-L6-v2, the default text encoder).

Why not sentence-transformers here: importing it (and transformers) costs ~3.5 s of CPU before a single sentence is
encoded, which alone breaks ragmed's ≤ 5 s cold-start budget for ``ragmed ask``. This module needs only torch,
``tokenizers`` and ``safetensors`` (all maintained libraries; the forward pass below is the standard BERT encoder,
~40 lines), loads in ~0.2 s, and is tested to match sentence-transformers' embeddings to 1e-5
(tests/test_text_encoder.py). Models that are not plain BERT + mean pooling + normalize fall back to
sentence-transformers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def supported(path: Path) -> bool:
    try:
        cfg = json.loads((path / "config.json").read_text())
        modules = json.loads((path / "modules.json").read_text())
        pool = json.loads((path / "1_Pooling" / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    types = [m["type"].rsplit(".", 1)[-1] for m in modules]
    return (cfg.get("model_type") == "bert" and cfg.get("position_embedding_type", "absolute") == "absolute"
            and cfg.get("hidden_act") == "gelu" and types[:2] == ["Transformer", "Pooling"]
            and set(types[2:]) <= {"Normalize"} and pool.get("pooling_mode_mean_tokens")
            and not any(pool.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                               "pooling_mode_mean_sqrt_len_tokens"))
            and (path / "tokenizer.json").exists() and (path / "model.safetensors").exists())


def _build_module(cfg: dict, state: dict):
    import torch
    import torch.nn.functional as F
    from torch import nn

    H, heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg.get("layer_norm_eps", 1e-12)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
            self.o, self.ln1 = nn.Linear(H, H), nn.LayerNorm(H, eps=eps)
            self.up, self.down = nn.Linear(H, cfg["intermediate_size"]), nn.Linear(cfg["intermediate_size"], H)
            self.ln2 = nn.LayerNorm(H, eps=eps)

        def forward(self, x, bias):
            b, t, _ = x.shape
            split = lambda y: y.view(b, t, heads, H // heads).transpose(1, 2)  # noqa: E731
            a = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), attn_mask=bias)
            x = self.ln1(x + self.o(a.transpose(1, 2).reshape(b, t, H)))
            return self.ln2(x + self.down(F.gelu(self.up(x))))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.word = nn.Embedding(cfg["vocab_size"], H)
            self.pos = nn.Embedding(cfg["max_position_embeddings"], H)
            self.tok_type = nn.Embedding(cfg["type_vocab_size"], H)
            self.ln = nn.LayerNorm(H, eps=eps)
            self.layers = nn.ModuleList(Layer() for _ in range(cfg["num_hidden_layers"]))

        def forward(self, ids, mask):
            t = ids.shape[1]
            x = self.ln(self.word(ids) + self.pos.weight[:t] + self.tok_type.weight[0])
            bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
            for layer in self.layers:
                x = layer(x, bias)
            m = mask.unsqueeze(-1).to(x.dtype)
            return (x * m).sum(1) / m.sum(1).clamp(min=1e-9)

    enc = Encoder()
    rename = {"embeddings.word_embeddings.weight": "word.weight", "embeddings.position_embeddings.weight": "pos.weight",
              "embeddings.token_type_embeddings.weight": "tok_type.weight", "embeddings.LayerNorm.weight": "ln.weight",
              "embeddings.LayerNorm.bias": "ln.bias"}
    parts = {"attention.self.query": "q", "attention.self.key": "k", "attention.self.value": "v",
             "attention.output.dense": "o", "attention.output.LayerNorm": "ln1", "intermediate.dense": "up",
             "output.dense": "down", "output.LayerNorm": "ln2"}
    mapped = {}
    for k, v in state.items():
        k = k.removeprefix("bert.")
        if k in rename:
            mapped[rename[k]] = v
        elif k.startswith("encoder.layer."):
            _, _, i, rest = k.split(".", 3)
            name, leaf = rest.rsplit(".", 1)
            if name in parts:
                mapped[f"layers.{i}.{parts[name]}.{leaf}"] = v
    missing = enc.load_state_dict(mapped, strict=True)
    del missing
    return enc.eval()


class BertLite:
    """tokenize → BERT → mean pool → L2 normalise, batched; returns float32 numpy."""

    def __init__(self, path: str | Path, max_seq_length: int = 256):
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        path = Path(path)
        cfg = json.loads((path / "config.json").read_text())
        st_cfg = path / "sentence_bert_config.json"
        if st_cfg.exists():
            max_seq_length = min(max_seq_length, json.loads(st_cfg.read_text()).get("max_seq_length", max_seq_length))
        self.max_seq_length = max_seq_length
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_seq_length)
        self.tokenizer.enable_padding(pad_id=cfg.get("pad_token_id", 0))
        self.model = _build_module(cfg, load_file(str(path / "model.safetensors")))
        self.dim = cfg["hidden_size"]
        self._torch = torch

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        torch = self._torch
        order = np.argsort([-len(t) for t in texts])  # length-sorted batches pad less
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                idx = order[i:i + batch_size]
                encs = self.tokenizer.encode_batch([texts[j] for j in idx])
                ids = torch.tensor([e.ids for e in encs], dtype=torch.long)
                mask = torch.tensor([e.attention_mask for e in encs], dtype=torch.long)
                v = torch.nn.functional.normalize(self.model(ids, mask), dim=-1)
                out[idx] = v.numpy()
        return out
