"""LoRA adapters (PEFT) on a local generator, by path: ``generator.params.adapter: DIR``.

An adapter directory written by ``ragmed align train`` holds PEFT's ``adapter_config.json`` +
``adapter_model.safetensors`` and ``ragmed_adapter.json``: the fingerprint of the base model it was trained on
(architecture, sizes and a hash of the first rows of the input embeddings, so the same weights under another path
still match and another model of the same shape does not). Loading refuses an adapter whose fingerprint differs from
the generator's model, naming both. An adapter from elsewhere (no ``ragmed_adapter.json``) is checked against PEFT's
own record (``base_model_name_or_path``, model type) as far as it goes, and a shape mismatch becomes a clear error.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from ragmed.errors import GeneratorError, ModelNotFoundError

log = logging.getLogger(__name__)
RECORD = "ragmed_adapter.json"


def base_fingerprint(model) -> dict[str, Any]:
    """What identifies a base model's weights: model type, text sizes, and a sha256 of its input embeddings' first
    64 rows (float32). Cheap (a few kB hashed) and stable across save/load and file paths."""
    import numpy as np
    import torch

    cfg = model.config
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        rows = emb[:64].detach().to("cpu", torch.float32).numpy()
    h = hashlib.sha256(np.ascontiguousarray(rows).tobytes()).hexdigest()[:20]
    return {"model_type": getattr(cfg, "model_type", None), "vocab_size": int(emb.shape[0]),
            "hidden_size": int(emb.shape[1]), "num_hidden_layers": getattr(text, "num_hidden_layers", None),
            "embeddings_sha256": h}


def adapter_tag(adapter_dir: str | Path) -> str:
    """How an adapter is named in a generator's ``model_id``: its directory name and the first 8 hex digits of the
    sha256 of its weights file, so that two adapters saved under the same directory name (every ``run/adapter``)
    never share an id, nor the answer caches keyed by it. The name alone when the weights file is absent (the load
    then fails with its own clear error)."""
    d = Path(adapter_dir)
    return f"{d.name}@{_weights_digest(str(d.resolve()))}" if (d / "adapter_model.safetensors").is_file() else d.name


def _weights_digest(adapter_dir: str) -> str:
    p = Path(adapter_dir) / "adapter_model.safetensors"
    st = p.stat()
    return _digest_cached(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _digest_cached(path: str, size: int, mtime_ns: int) -> str:  # size / mtime: a rewritten file is hashed again
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:8]


def write_record(adapter_dir: str | Path, model, model_id: str, **extra: Any) -> dict[str, Any]:
    """Write ``ragmed_adapter.json`` into a saved PEFT adapter directory: the base model's id and fingerprint (taken
    from ``model``, the base or the PEFT-wrapped model: LoRA leaves the input embeddings alone)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    rec = {"base_model": model_id, "base_fingerprint": base_fingerprint(base), **extra}
    (Path(adapter_dir) / RECORD).write_text(json.dumps(rec, indent=1))
    return rec


def read_record(adapter_dir: str | Path) -> dict[str, Any] | None:
    p = Path(adapter_dir) / RECORD
    return json.loads(p.read_text()) if p.is_file() else None


def check_adapter(adapter_dir: str | Path, model, model_id: str = "") -> dict[str, Any]:
    """Raise :class:`GeneratorError` when ``adapter_dir`` is not a PEFT adapter for ``model``; return its record."""
    d = Path(adapter_dir)
    if not (d / "adapter_config.json").is_file():
        raise ModelNotFoundError("no adapter here (adapter_config.json missing)", path=str(d),
                                 remedy="point generator.params.adapter at the directory `ragmed align train --out` "
                                        "wrote (its adapter/ folder)")
    rec = read_record(d) or {}
    want = rec.get("base_fingerprint")
    if want:
        have = base_fingerprint(model)
        diff = {k: (want.get(k), have.get(k)) for k in want if want.get(k) != have.get(k)}
        if diff:
            detail = ", ".join(f"{k}: adapter {a!r} vs model {b!r}" for k, (a, b) in diff.items())
            raise GeneratorError(
                f"this adapter was trained on another base model ({rec.get('base_model', '?')}), not on "
                f"{model_id or 'this generator’s model'} ({detail})", path=str(d),
                remedy="use the generator the adapter was trained on, or train one for this model with "
                       "`ragmed align train`")
        return rec
    peft_cfg = json.loads((d / "adapter_config.json").read_text())
    base_type = (peft_cfg.get("base_model_class") or "")
    log.info("adapter %s has no %s; trusting PEFT's record (base %s %s)", d, RECORD,
             peft_cfg.get("base_model_name_or_path"), base_type)
    return {"peft": peft_cfg}


def attach_adapter(model, adapter_dir: str | Path, *, model_id: str = "", merge: bool = True):
    """The model with the LoRA adapter at ``adapter_dir`` applied (merged into the weights by default: same speed
    as the base model). Refuses an adapter for another base model."""
    check_adapter(adapter_dir, model, model_id)
    try:
        from peft import PeftModel
    except ImportError as e:
        raise GeneratorError("loading an adapter needs peft", remedy="pip install 'ragmed[align]'") from e
    try:
        pm = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as e:  # shape mismatches surface as RuntimeError
        raise GeneratorError(f"cannot apply the adapter to {model_id or 'this model'}: {e}", path=str(adapter_dir),
                             remedy="the adapter was probably trained on another base model") from e
    return pm.merge_and_unload() if merge else pm
