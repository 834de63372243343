"""DPO with LoRA on RAG-PT pairs: TRL's ``DPOTrainer`` with a small subclass, PEFT adapters.

What the subclass (:class:`WeightedDPOTrainer`) adds to TRL, and why:

- **per-pair weights**: TRL's ``use_weighting`` is WPO's weighting (from the policy's own probabilities), not a weight
  given with the pair; here the sigmoid DPO loss of pair *i* is multiplied by its ``weight`` (mean 1 over the pair
  file, see :mod:`ragmed.align.hallucinate`), ``--no-weights`` sets every weight to 1;
- **an image per side**: TRL's vision collator gives the chosen and rejected answers the same images; a
  cross-modality pair needs the real image on the chosen side and the noise (or unrelated) image on the rejected
  side. :class:`PairCollator` renders both sides through the model's own ``AutoProcessor`` and chat template (the
  same messages the generator builds at inference) — one path for LLaVA, Qwen2-VL, Idefics3 / SmolVLM, PaliGemma /
  Gemma 3, no per-model code. Text-only causal LMs use TRL's own tokenisation and collator, plus the weights;
- **two-stage schedule** (optional, MMed-RAG): cross-modality pairs first, then the retrieval pairs, in order.

The reference model is the base model (TRL disables the LoRA adapter for the reference pass). On a CPU the
configuration is ``bf16=False, use_cpu=True, report_to="none"`` and gradient checkpointing off (TRL's default of on
is 1.5–2× slower per step here); on a GPU the same command uses bf16 where the device supports it.

Outputs in ``--out``: ``adapter/`` (PEFT adapter + ``ragmed_adapter.json``, the base model's fingerprint),
``checkpoints/`` (``--resume`` continues from the newest), ``log.jsonl`` (every logged step), ``curves.png`` (loss
and reward margin), ``card.json`` + ``CARD.md`` (data, counts, hyper-parameters, time, versions).

The generator's model is trained in place (LoRA layers are injected into it): load a fresh pipeline to use the
result.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragmed.errors import ConfigError, GeneratorError

log = logging.getLogger(__name__)
STAGE_ORDER = {"cross-modality": 0}  # two-stage: cross-modality first, every other kind after


@dataclass
class TrainOptions:
    beta: float = 0.1
    lr: float = 5e-5
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 1
    grad_accum: int = 1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    use_weights: bool = True
    two_stage: bool = False
    kinds: list[str] | None = None
    max_length: int | None = 1024
    save_steps: int = 10
    save_total_limit: int = 2
    seed: int = 0
    threads: int | None = None
    resume: bool = False
    images: str | None = None  # root of the pair file's relative image paths
    logging_steps: int = 1
    gradient_checkpointing: bool = False  # off on a CPU (1.5–2× slower); on for a 7B VLM on a GPU under 80 GB


# --- randomness kept local ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def preserved_rng():
    """TRL and transformers seed the global RNGs (``set_seed``); restore the caller's state afterwards."""
    import numpy as np
    import torch

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


# --- images --------------------------------------------------------------------------------------------------------
def load_side_image(spec: Any, root: str | None, fallback: str | None = None):
    """A pair side's image as an RGB PIL image: ``{"noise": seed}`` (regenerated, the size of ``fallback``),
    ``{"path": rel}`` or a relative path string."""
    from ragmed.align.pairs import noise_image
    from ragmed.generate.chat import to_pil
    from ragmed.io import load_image

    def path_img(rel: str):
        p = Path(rel)
        if not p.is_absolute() and root:
            p = Path(root) / p
        return to_pil(load_image(p))

    if isinstance(spec, str) and spec.startswith("{"):
        spec = json.loads(spec)
    if isinstance(spec, dict):
        if "noise" in spec:
            return noise_image(path_img(fallback), int(spec["noise"])) if fallback else None
        return path_img(spec["path"])
    return path_img(spec) if spec else None


def vlm_messages(prompt: list[dict[str, Any]], answer: str | None = None) -> list[dict[str, Any]]:
    """Chat messages in the processor's format, the image placeholder first in the last user message (as the
    transformers generator builds them at inference), plus the assistant's answer when given."""
    msgs = []
    last_user = max(i for i, m in enumerate(prompt) if m["role"] == "user")
    for i, m in enumerate(prompt):
        parts = [{"type": "text", "text": m["content"] if isinstance(m["content"], str) else
                  "\n".join(p.get("text", "") for p in m["content"] if p.get("type") == "text")}]
        if i == last_user:
            parts = [{"type": "image"}] + parts
        msgs.append({"role": m["role"], "content": parts})
    if answer is not None:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return msgs


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PairCollator:
    """Batches vision pairs: rows ``[chosen_1..chosen_B, rejected_1..rejected_B]``, each side with its own image,
    rendered by the processor's chat template; ``completion_mask`` marks the answer tokens; ``weight`` per pair."""

    def __init__(self, processor, images_root: str | None, max_length: int | None = None):
        self.processor = processor
        self.root = images_root
        self.max_length = max_length

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        proc = self.processor
        tok = getattr(proc, "tokenizer", proc)
        texts, prompts, imgs = [], [], []
        for side in ("chosen", "rejected"):
            for ex in examples:
                prompt = json.loads(ex["prompt_json"])
                same = side == "chosen" or not ex.get("rejected_images")
                img_spec = ex["images"][0] if same else ex["rejected_images"]
                img = load_side_image(img_spec, self.root, fallback=ex["images"][0])
                msgs = vlm_messages(prompt)
                prompts.append(proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))
                texts.append(proc.apply_chat_template(vlm_messages(prompt, ex[side]), tokenize=False))
                imgs.append(img)
        old_side = tok.padding_side
        tok.padding_side = "right"
        try:
            enc = proc(text=texts, images=imgs, padding=True, return_tensors="pt")
            mask = torch.zeros_like(enc["input_ids"])
            for i, (p, img) in enumerate(zip(prompts, imgs)):
                p_ids = proc(text=[p], images=[img], return_tensors="pt")["input_ids"][0].tolist()
                n_real = int(enc["attention_mask"][i].sum())
                start = _common_prefix(p_ids, enc["input_ids"][i, :n_real].tolist())
                mask[i, start:n_real] = 1
        finally:
            tok.padding_side = old_side
        if self.max_length and enc["input_ids"].shape[1] > self.max_length:
            log.warning("a pair is %d tokens, over max_length %d: kept whole (image tokens cannot be cut)",
                        enc["input_ids"].shape[1], self.max_length)
        out = dict(enc)
        out["completion_mask"] = mask
        out["weight"] = torch.tensor([float(ex.get("weight", 1.0)) for ex in examples], dtype=torch.float32)
        return out


class WeightedTextCollator:
    """TRL's text collator, plus each pair's ``weight``."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        out = self.inner(examples)
        out["weight"] = torch.tensor([float(ex.get("weight", 1.0)) for ex in examples], dtype=torch.float32)
        return out


def _trainer_class():
    import torch
    import torch.nn.functional as F
    from trl import DPOTrainer
    from trl.trainer.utils import use_adapter

    class WeightedDPOTrainer(DPOTrainer):
        """DPOTrainer whose sigmoid loss is weighted per pair, whose batches may carry a different image on the
        rejected side (:class:`PairCollator`), and which can keep the dataset's order (two-stage schedule)."""

        sequential = False

        def _get_train_sampler(self, *args, **kwargs):
            if self.sequential:
                return torch.utils.data.SequentialSampler(self.train_dataset)
            return super()._get_train_sampler(*args, **kwargs)

        def _reference(self, model):
            if self.ref_model is not None:
                return contextlib.nullcontext(self.ref_model)
            unwrapped = self.accelerator.unwrap_model(model)
            name = "ref" if "ref" in getattr(unwrapped, "peft_config", {}) else None

            @contextlib.contextmanager
            def ctx():
                with use_adapter(unwrapped, adapter_name=name):
                    yield model
            return ctx()

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mode = "train" if self.model.training else "eval"
            inputs = dict(inputs)
            weight = inputs.pop("weight", None)
            mask = inputs["completion_mask"]
            kw = {k: v for k, v in inputs.items() if k not in ("completion_mask", "ref_chosen_logps",
                                                                 "ref_rejected_logps")}
            kw["use_cache"] = False
            labels = inputs["input_ids"].masked_fill(mask == 0, -100)
            logps = model(**kw, labels=labels, fused_lm_head=True).log_probs.sum(-1)
            with torch.no_grad(), self._reference(model) as ref:
                ref_logps = ref(**kw, labels=labels, fused_lm_head=True).log_probs.sum(-1)
            ch, rj = logps.chunk(2)
            rch, rrj = ref_logps.chunk(2)
            chosen_r, rejected_r = self.beta * (ch - rch), self.beta * (rj - rrj)
            per_pair = -F.logsigmoid(chosen_r - rejected_r)
            w = torch.ones_like(per_pair) if weight is None else weight.to(per_pair.device, per_pair.dtype)
            loss = (per_pair * w).mean()
            m = self._metrics[mode]
            margins = (chosen_r - rejected_r).detach()
            m["rewards/chosen"].append(chosen_r.detach().mean().item())
            m["rewards/rejected"].append(rejected_r.detach().mean().item())
            m["rewards/margins"].append(margins.mean().item())
            m["rewards/accuracies"].append((margins > 0).float().mean().item())
            m["loss_unweighted"].append(per_pair.detach().mean().item())
            m["logps/chosen"].append(ch.detach().mean().item())
            m["logps/rejected"].append(rj.detach().mean().item())
            if return_outputs:
                return loss, {"margins": margins}
            return loss

    return WeightedDPOTrainer


# --- data ----------------------------------------------------------------------------------------------------------
def select_pairs(pairs: list[dict[str, Any]], opts: TrainOptions, takes_image: bool) -> list[dict[str, Any]]:
    keep = [p for p in pairs if opts.kinds is None or p["kind"] in opts.kinds]
    if not takes_image:
        dropped = sum(1 for p in keep if p.get("rejected_image"))
        if dropped:
            log.warning("%d cross-modality pair(s) dropped: the generator does not take the image", dropped)
        keep = [p for p in keep if not p.get("rejected_image")]
    rng = random.Random(opts.seed)
    keep = list(keep)
    rng.shuffle(keep)
    if opts.two_stage:
        keep.sort(key=lambda p: STAGE_ORDER.get(p["kind"], 1))  # stable: shuffled within each stage
    return keep


def to_dataset(pairs: list[dict[str, Any]], opts: TrainOptions, vlm: bool):
    from datasets import Dataset

    rows = []
    for p in pairs:
        w = float(p.get("weight", 1.0)) if opts.use_weights else 1.0
        if vlm:
            rows.append({"prompt_json": json.dumps(p["prompt"]), "chosen": p["chosen"], "rejected": p["rejected"],
                         "images": [p["image"]], "rejected_images": json.dumps(p["rejected_image"])
                         if p.get("rejected_image") else "", "weight": w, "id": p["id"]})
        else:
            rows.append({"prompt": [{"role": m["role"], "content": m["content"]} for m in p["prompt"]],
                         "chosen": [{"role": "assistant", "content": p["chosen"]}],
                         "rejected": [{"role": "assistant", "content": p["rejected"]}], "weight": w, "id": p["id"]})
    return Dataset.from_list(rows)


# --- records -------------------------------------------------------------------------------------------------------
def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self._t = None

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if self._t is not None:
                self.times.append(time.perf_counter() - self._t)

        def on_log(self, args, state, control, logs=None, **kw):
            # the Trainer has already copied ``logs`` into ``state.log_history``: write the step time there too, so
            # that it travels with the checkpoints and a resumed run's card counts every step
            if logs is not None and "loss" in logs and self.times:
                logs["step_seconds"] = round(self.times[-1], 3)
                if state.log_history and state.log_history[-1].get("step") == state.global_step:
                    state.log_history[-1]["step_seconds"] = logs["step_seconds"]

    return StepTimer()


def plot_curves(history: list[dict[str, Any]], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("curves skipped: matplotlib is not installed (pip install 'ragmed[eval]')")
        return None
    rows = [h for h in history if "loss" in h and "step" in h]
    if not rows:
        return None
    steps = [h["step"] for h in rows]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot(steps, [h["loss"] for h in rows], lw=1, label="weighted loss")
    if all("loss_unweighted" in h for h in rows):
        ax[0].plot(steps, [h["loss_unweighted"] for h in rows], lw=1, alpha=0.6, label="unweighted")
    ax[0].axhline(math.log(2), color="grey", ls=":", lw=0.8)
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("DPO loss")
    ax[0].legend(fontsize=7)
    ax[1].plot(steps, [h.get("rewards/margins", float("nan")) for h in rows], lw=1, color="C2")
    ax[1].axhline(0, color="grey", ls=":", lw=0.8)
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("reward margin (β·Δ log-ratio)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("ragmed", "torch", "transformers", "trl", "peft", "accelerate"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "?"
    return out


# --- the run -------------------------------------------------------------------------------------------------------
def train_dpo(generator, pairs_path: str | Path, out: str | Path, opts: TrainOptions | None = None, *,
              progress: bool = False) -> dict[str, Any]:
    """Train a LoRA adapter for ``generator`` (a transformers / gguf generator of a pipeline) on a pair file with
    DPO. Returns the run card (also in ``out/card.json``)."""
    import torch
    from peft import LoraConfig
    from trl import DPOConfig

    from ragmed.align.pairs import read_pairs
    from ragmed.generate.adapter import base_fingerprint, write_record
    from ragmed.generate.hf import torch_threads

    opts = opts or TrainOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not hasattr(generator, "model") or not hasattr(generator, "warm_up"):
        raise ConfigError(f"generator {getattr(generator, 'id', generator)!r} has no local model to train; use the "
                          "transformers or gguf generator")
    if getattr(generator, "adapter", None):
        raise ConfigError("train from the base generator: remove generator.params.adapter first")
    generator.warm_up()
    model = generator.model
    vlm = bool(getattr(generator, "is_vlm", False))
    processing = generator.processor if vlm else generator.tokenizer
    base_path = getattr(generator, "path", None)
    meta_path = Path(str(pairs_path) + ".meta.json")
    pair_meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    images_root = opts.images or pair_meta.get("images")
    pairs = select_pairs(read_pairs(pairs_path), opts, vlm)
    if not pairs:
        raise ConfigError("no pairs to train on", path=str(pairs_path),
                          remedy="build pairs with `ragmed align pairs` (check --kinds)")
    counts = Counter(p["kind"] for p in pairs)
    fingerprint = base_fingerprint(model)
    device = str(next(model.parameters()).device)
    on_cpu = device == "cpu"
    bf16 = (not on_cpu) and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    ckpt_dir = out / "checkpoints"
    args = DPOConfig(
        output_dir=str(ckpt_dir), beta=opts.beta, learning_rate=opts.lr, num_train_epochs=opts.epochs,
        max_steps=opts.max_steps, per_device_train_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.grad_accum, bf16=bf16, use_cpu=on_cpu, report_to="none",
        gradient_checkpointing=opts.gradient_checkpointing, logging_steps=opts.logging_steps, save_strategy="steps",
        save_steps=opts.save_steps, save_total_limit=opts.save_total_limit, seed=opts.seed,
        remove_unused_columns=False, max_length=None if vlm else opts.max_length, disable_tqdm=not progress,
        dataloader_num_workers=0, lr_scheduler_type="linear", warmup_steps=0)
    lora = LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
                      target_modules=_targets(model, opts.lora_targets, vlm), task_type="CAUSAL_LM")
    timer = _step_timer()
    t0 = time.perf_counter()
    resume = None
    if opts.resume and ckpt_dir.is_dir() and any(ckpt_dir.glob("checkpoint-*")):
        resume = True
    with preserved_rng(), torch_threads(opts.threads):
        Trainer = _trainer_class()
        ds = to_dataset(pairs, opts, vlm)
        collator = PairCollator(processing, images_root, opts.max_length) if vlm else None
        trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=processing,
                          peft_config=lora, data_collator=collator, callbacks=[timer])
        if not vlm:
            trainer.data_collator = WeightedTextCollator(trainer.data_collator)
        trainer.sequential = opts.two_stage
        try:
            trainer.train(resume_from_checkpoint=resume)
        except ValueError as e:
            raise GeneratorError(f"DPO training failed: {e}") from e
        adapter_dir = out / "adapter"
        trainer.save_model(str(adapter_dir))
    total = time.perf_counter() - t0
    history = trainer.state.log_history
    with (out / "log.jsonl").open("w") as f:
        for h in history:
            f.write(json.dumps(h) + "\n")
    curves = plot_curves(history, out / "curves.png")
    # step times from the log history: it travels with the checkpoints, so resumed runs count every step once
    steps_t = [float(h["step_seconds"]) for h in history if "loss" in h and "step_seconds" in h] or timer.times
    losses = [h for h in history if "loss" in h]
    record = write_record(adapter_dir, model, generator.model_id, kind="vlm" if vlm else "causal-lm",
                          pairs=Path(pairs_path).name, ragmed_version=_versions()["ragmed"])
    if record["base_fingerprint"] != fingerprint:
        raise GeneratorError("the base model's embeddings changed during training: the adapter record would lie")
    card = {
        "adapter": str(adapter_dir), "base_model": generator.model_id,
        "base_path_name": Path(base_path).name if base_path else None,
        "base_fingerprint": fingerprint, "kind": record["kind"], "device": device, "bf16": bf16,
        "data": {"pairs": Path(pairs_path).name, "n_pairs_used": len(pairs), "counts_used": dict(counts),
                 "pair_file_counts": pair_meta.get("counts"), "pair_meta": {k: pair_meta.get(k) for k in (
                     "seed", "limit", "f1_threshold", "generator_model", "n_questions_answered", "rates")}},
        "hyper_parameters": {k: v for k, v in asdict(opts).items() if k not in ("images",)},
        "trl_config": {"loss": "sigmoid DPO × pair weight", "reference": "base model (LoRA disabled)",
                       "gradient_checkpointing": opts.gradient_checkpointing, "use_cpu": on_cpu},
        "steps": trainer.state.global_step, "resumed": bool(resume),
        "seconds_total": round(total, 1) if not resume else round(sum(steps_t), 1),
        "seconds_this_run": round(total, 1),
        "seconds_per_step": round(sum(steps_t) / len(steps_t), 3) if steps_t else float("nan"),
        "seconds_per_step_median": round(sorted(steps_t)[len(steps_t) // 2], 3) if steps_t else None,
        "steps_timed": len(steps_t),
        "first_loss": losses[0]["loss"] if losses else None, "last_loss": losses[-1]["loss"] if losses else None,
        "last_margin": losses[-1].get("rewards/margins") if losses else None,
        "curves": curves.name if curves else None, "versions": _versions(),
    }
    (out / "card.json").write_text(json.dumps(card, indent=1, default=str))
    (out / "CARD.md").write_text(_card_md(card))
    return card


def _targets(model, wanted: list[str], vlm: bool):
    """LoRA target modules: ``wanted`` (module-name suffixes) inside the language model only — a VLM's vision tower
    shares names like ``q_proj`` and stays frozen."""
    names = [n for n, _ in model.named_modules() if n.split(".")[-1] in set(wanted)]
    if not names:
        raise ConfigError(f"no module named {', '.join(wanted)} in {type(model).__name__}",
                          remedy="set --lora-targets to the attention projections of this architecture")
    if not vlm:
        return list(wanted)
    vision = ("vision", "visual", "image_tower", "vision_tower", "vision_model", "multi_modal_projector", "connector")
    keep = [n for n in names if not any(v in n for v in vision)]
    if not keep:
        raise ConfigError("no language-model module to adapt (every match is in the vision tower)")
    return "|".join(_escape(n) for n in keep).join(("^(", ")$"))


def _escape(s: str) -> str:
    import re

    return re.escape(s)


def _card_md(c: dict[str, Any]) -> str:
    hp = c["hyper_parameters"]
    lines = [f"# ragmed align run card", "",
             f"- base model: `{c['base_model']}` ({c['kind']}, "
             f"fingerprint {c['base_fingerprint']['embeddings_sha256']})",
             f"- data: {c['data']['pairs']}, {c['data']['n_pairs_used']} pairs used: "
             + ", ".join(f"{k} {v}" for k, v in sorted(c['data']['counts_used'].items())),
             f"- DPO β {hp['beta']}, lr {hp['lr']}, batch {hp['batch_size']} × accum {hp['grad_accum']}, "
             f"epochs {hp['epochs']}, max steps {hp['max_steps']}, weights {'on' if hp['use_weights'] else 'off'}, "
             f"two-stage {'on' if hp['two_stage'] else 'off'}",
             f"- LoRA r {hp['lora_r']}, α {hp['lora_alpha']}, dropout {hp['lora_dropout']}, "
             f"targets {hp['lora_targets']}",
             f"- device {c['device']}, bf16 {c['bf16']}, gradient checkpointing "
             f"{'on' if hp['gradient_checkpointing'] else 'off'}",
             f"- steps {c['steps']}, total {c['seconds_total']} s, {c['seconds_per_step']} s/step "
             f"(median {c['seconds_per_step_median']})",
             f"- loss {c['first_loss']} → {c['last_loss']}; last reward margin {c['last_margin']}",
             f"- curves: {c['curves']}", f"- versions: " + ", ".join(f"{k} {v}" for k, v in c["versions"].items()), ""]
    return "\n".join(lines)
