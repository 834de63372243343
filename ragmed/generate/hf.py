"""The ``transformers`` backend: a model from a local directory.

- a vision-language model (``AutoModelForImageTextToText`` + ``AutoProcessor``: LLaVA / LLaVA-Med style, Qwen2-VL,
  MedGemma, …): the image goes into the prompt with the processor's chat template;
- a text-only causal LM (``AutoModelForCausalLM`` + ``AutoTokenizer``): given the retrieved reports and knowledge as
  text, with the tokenizer's chat template.

Which one is decided from the directory's ``config.json`` (``kind: auto``) or forced (``kind: vlm | causal-lm``).
Greedy decoding by default (deterministic); ``temperature > 0`` samples with ``seed`` without touching the caller's
global RNG state. ``threads`` sets torch's CPU threads while generating (1 is much faster than 2 on a busy 2-core
machine; see eval/results/bench_generate.json). ``adapter: DIR`` applies a LoRA adapter (``ragmed align train``) on
top of the model, refused when it was trained on another base model (:mod:`ragmed.generate.adapter`).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ragmed.errors import ConfigError, GeneratorError, ModelNotFoundError
from ragmed.generate.chat import ChatGenerator, ChatResult, message_images, message_text, text_only

log = logging.getLogger(__name__)
KINDS = ("auto", "vlm", "causal-lm")


def is_vlm_config(config) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return getattr(config, "model_type", None) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


@contextlib.contextmanager
def torch_threads(n: int | None):
    import torch

    if not n:
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def images_only_processor(path: Path, error: ImportError):
    """The checkpoint's processor without its video processor, for processors (Qwen2-VL, Qwen2.5-VL) whose video
    processor needs torchvision, which does not import beside this torch: images go through the image processor."""
    import json

    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    cfg_path = Path(path) / "processor_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    cls = getattr(transformers, str(cfg.get("processor_class")), None)
    if cls is None or "video_processor" not in cls.get_attributes():
        raise error
    attrs = [a for a in cls.get_attributes() if a != "video_processor"]
    images_only = type(cls.__name__, (cls,), {"get_attributes": classmethod(lambda c: list(attrs))})
    tmpl = Path(path) / "chat_template.jinja"
    extra = {k: v for k, v in cfg.items() if k not in ("processor_class", "chat_template")}
    log.info("%s: loading %s without its video processor (%s)", path, cls.__name__, str(error).strip().splitlines()[0])
    return images_only(image_processor=AutoImageProcessor.from_pretrained(path),
                       tokenizer=AutoTokenizer.from_pretrained(path),
                       chat_template=tmpl.read_text() if tmpl.is_file() else cfg.get("chat_template"), **extra)


class TransformersGenerator(ChatGenerator):
    id = "transformers"

    def __init__(self, path: str | None = None, *, model_path: str | None = None, kind: str = "auto",
                 dtype: str = "auto", device: str = "cpu", threads: int | None = None, image_max_side: int = 768,
                 trust_remote_code: bool = False, name: str | None = None, adapter: str | None = None,
                 **common: Any):
        super().__init__(**common)
        self.path = path or model_path
        if kind not in KINDS:
            raise ConfigError(f"generator param kind={kind!r}; one of {', '.join(KINDS)}")
        self.kind = kind
        self.dtype, self.device = dtype, device
        self.threads = int(threads) if threads else None
        self.image_max_side = int(image_max_side)
        self.trust_remote_code = bool(trust_remote_code)
        self.name = name
        self.adapter = str(adapter) if adapter else None
        self.model = self.tokenizer = self.processor = None
        self.is_vlm = False
        self._gen_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return f"{self.id}:{self.name or (Path(self.path).name if self.path else '?')}" + self.adapter_suffix

    @property
    def adapter_suffix(self) -> str:
        if not self.adapter:
            return ""
        from ragmed.generate.adapter import adapter_tag

        return f"+lora:{adapter_tag(self.adapter)}"

    @property
    def accepts_images(self) -> bool:  # type: ignore[override]
        if not self._ready:
            self.warm_up()
        return self.is_vlm

    def _model_dir(self) -> Path:
        if not self.path:
            raise ConfigError("the transformers generator needs generator.params.path (a local model directory)")
        p = Path(self.path)
        if not (p / "config.json").is_file():
            raise ModelNotFoundError("no model directory (config.json) here", path=str(p),
                                     remedy="download the model once (e.g. `huggingface-cli download ORG/NAME "
                                            "--local-dir DIR` on a machine with network) and set "
                                            "generator.params.path to DIR")
        return p

    def _load(self) -> None:
        import torch
        from transformers import AutoConfig

        p = self._model_dir()
        try:
            config = AutoConfig.from_pretrained(p, trust_remote_code=self.trust_remote_code)
        except (OSError, ValueError) as e:
            raise GeneratorError(f"cannot read the model config: {e}", path=str(p)) from e
        self.is_vlm = self.kind == "vlm" or (self.kind == "auto" and is_vlm_config(config))
        dtype = {"auto": torch.float32 if self.device == "cpu" else "auto", "float32": torch.float32,
                 "bfloat16": torch.bfloat16, "float16": torch.float16}.get(self.dtype)
        if dtype is None:
            raise ConfigError(f"generator param dtype={self.dtype!r}; one of auto, float32, bfloat16, float16")
        kw = dict(dtype=dtype, trust_remote_code=self.trust_remote_code)
        try:
            if self.is_vlm:
                from transformers import AutoModelForImageTextToText, AutoProcessor

                try:
                    self.processor = AutoProcessor.from_pretrained(p, trust_remote_code=self.trust_remote_code)
                except ImportError as e:  # e.g. Qwen2-VL's video processor needs torchvision; images need only PIL
                    self.processor = images_only_processor(p, e)
                self.tokenizer = getattr(self.processor, "tokenizer", None) or self.processor
                self.model = AutoModelForImageTextToText.from_pretrained(p, **kw)
            else:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                self.tokenizer = AutoTokenizer.from_pretrained(p, trust_remote_code=self.trust_remote_code)
                self.model = AutoModelForCausalLM.from_pretrained(p, **kw)
        except (OSError, ValueError, KeyError) as e:
            raise GeneratorError(f"cannot load the model: {e}", path=str(p),
                                 remedy="check that the directory holds a complete transformers checkpoint") from e
        if self.adapter:
            from ragmed.generate.adapter import attach_adapter

            base_id = self.model_id.removesuffix(self.adapter_suffix)
            self.model = attach_adapter(self.model, self.adapter, model_id=base_id)
        self.model.to(self.device).eval()

    # --- prompt → tensors ----------------------------------------------------------------------------------------
    def _inputs(self, messages: list[dict[str, Any]]):
        images = message_images(messages)
        if self.is_vlm:
            msgs = []
            for m in messages:
                parts = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
                msgs.append({"role": m["role"], "content": [
                    {"type": "image"} if p.get("type") in ("image", "image_url") else {"type": "text", "text": p.get("text", "")}
                    for p in parts]})
            prompt = self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            return self.processor(text=[prompt], images=images or None, return_tensors="pt")
        if images:
            log.info("%s is a text-only model: the image is not shown to it", self.model_id)
        msgs = text_only(messages)
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True, return_tensors="pt")
        prompt = "\n\n".join(m["content"] for m in msgs) + "\n"
        return tok(prompt, return_tensors="pt")

    def _gen_kwargs(self, max_new_tokens: int, temperature: float | None, stop: list[str] | None) -> dict[str, Any]:
        t = self.temperature if temperature is None else float(temperature)
        tok = self.tokenizer
        kw: dict[str, Any] = dict(max_new_tokens=int(max_new_tokens), do_sample=t > 0)
        if t > 0:
            kw["temperature"] = t
        else:  # unset sampling defaults some checkpoints ship, so greedy decoding gives no warnings
            kw.update(temperature=None, top_p=None, top_k=None)
        pad = getattr(tok, "pad_token_id", None)
        if pad is None:
            pad = getattr(tok, "eos_token_id", None)
        if pad is not None:
            kw["pad_token_id"] = pad
        if stop:
            kw["stop_strings"], kw["tokenizer"] = list(stop), tok
        return kw

    @contextlib.contextmanager
    def _rng(self, seed: int | None, temperature: float | None):
        import torch

        t = self.temperature if temperature is None else temperature
        if not t or t <= 0:
            yield
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed if seed is None else int(seed))
            yield

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def chat(self, messages: list[dict[str, Any]], *, max_new_tokens: int = 64, temperature: float | None = None,
             seed: int | None = None, stop: list[str] | None = None) -> ChatResult:
        import torch

        self.warm_up()
        with self._gen_lock, torch_threads(self.threads), torch.inference_mode(), self._rng(seed, temperature):
            inputs = self._inputs(messages).to(self.device)
            n_in = inputs["input_ids"].shape[1]
            out = self.model.generate(**inputs, **self._gen_kwargs(max_new_tokens, temperature, stop))
        new = out[0, n_in:]
        text = self._decode(new)
        if stop:
            cut = [text.find(s) for s in stop if s in text]
            text = text[: min(cut)] if cut else text
        finish = "length" if len(new) >= max_new_tokens else "stop"
        return ChatResult(text=text.strip(), prompt_tokens=int(n_in), completion_tokens=int(len(new)),
                          finish_reason=finish)

    def choose(self, messages: list[dict[str, Any]], choices: list[str]) -> tuple[str, dict[str, float]]:
        """Constrained answer to a closed question: the choice the model finds most likely as the start of its
        reply (log-probability of the choice's tokens after the prompt, best of "yes" / "Yes" spellings).
        Deterministic; no free text to parse."""
        import torch

        self.warm_up()
        tok = self.tokenizer
        scores: dict[str, float] = {}
        with self._gen_lock, torch_threads(self.threads), torch.inference_mode():
            inputs = self._inputs(messages).to(self.device)
            out = self.model(**inputs, use_cache=True)
            first = torch.log_softmax(out.logits[0, -1].float(), -1)
            for c in choices:
                best = -float("inf")
                for variant in dict.fromkeys((c, c[:1].upper() + c[1:])):
                    ids = tok(variant, add_special_tokens=False)["input_ids"]
                    if not ids:
                        continue
                    lp = float(first[ids[0]])
                    if len(ids) > 1:  # the rest of a multi-token choice, continuing from the prompt's cache
                        n = inputs["input_ids"].shape[1]
                        rest = torch.tensor([ids], device=self.device)
                        logits = self.model(input_ids=rest, past_key_values=copy.deepcopy(out.past_key_values),
                                            attention_mask=torch.ones((1, n + len(ids)), dtype=torch.long,
                                                                      device=self.device)).logits[0]
                        lps = torch.log_softmax(logits[:-1].float(), -1)
                        lp += float(sum(lps[i, t] for i, t in enumerate(ids[1:])))
                    best = max(best, lp)
                scores[c] = best
        return max(choices, key=lambda c: scores[c]), scores

    def stream(self, messages: list[dict[str, Any]], *, max_new_tokens: int = 64, temperature: float | None = None,
               seed: int | None = None, stop: list[str] | None = None) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        self.warm_up()
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        errors: list[BaseException] = []

        def run():
            try:
                with self._gen_lock, torch_threads(self.threads), torch.inference_mode(), self._rng(seed, temperature):
                    inputs = self._inputs(messages).to(self.device)
                    self.model.generate(**inputs, streamer=streamer,
                                        **self._gen_kwargs(max_new_tokens, temperature, stop))
            except BaseException as e:  # surfaced to the consumer below
                errors.append(e)
                streamer.end()

        th = threading.Thread(target=run, daemon=True)
        th.start()
        for piece in streamer:
            if piece:
                yield piece
        th.join()
        if errors:
            raise GeneratorError(f"generation failed: {errors[0]}") from errors[0]


__all__ = ["TransformersGenerator", "is_vlm_config", "torch_threads", "message_text"]
