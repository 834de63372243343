"""Contrastive training of the ragmed-default image tower into a frozen text space (LiT / ConVIRT style).

The text encoder is frozen: every distinct text is embedded once, and only the image tower learns. The loss is a
symmetric InfoNCE (image→text and text→image) with *multi-positive* targets: two items of a batch whose texts are
identical (labels rendered as text repeat often) are positives of each other, not false negatives. Optionally an
image–image InfoNCE between two augmentations of the same image (``ssl_weight``) keeps instance detail that helps on
domains without text.

Augmentations suit medical images: random zoom/crop (scale 0.7–1), rotation ±10°, small translation and aspect
change, luma contrast / brightness / gamma and noise. No flips (a chest X-ray's left is not its right).

Training is resumable: a checkpoint (model + optimiser state as safetensors, progress as JSON) is written to
``OUT/.checkpoint`` every ``checkpoint_every`` steps and at every epoch's end; a rerun with the same data and
configuration resumes from it. Randomness comes from generators seeded by ``seed`` (never global state).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragmed.encoders.tower import PreprocessConfig, TowerConfig, letterbox_uint8
from ragmed.errors import EncoderError, RagmedError

log = logging.getLogger("ragmed.encoders.train")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    epoch_size: int | None = None  # samples per epoch (weighted sampling with replacement); None = len(data)
    seed: int = 0
    ssl_weight: float = 0.0  # weight of the image–image (two views) InfoNCE term
    ssl_temperature: float = 0.1
    aug_strength: float = 1.0  # scales every augmentation range (see augment)
    # >0: the second view of the image–image term is augmented this strongly (a SimCLR-style strong view) and only
    # the first, mildly augmented view (aug_strength) is aligned to the text; 0: both views at aug_strength, both
    # aligned to the text.
    ssl_aug_strength: float = 0.0
    init_temperature: float = 0.07
    checkpoint_every: int = 50  # steps
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainSet:
    """Preprocessed images and their texts. ``text_ids[i]`` indexes ``texts``; ``weights`` are sampling weights."""

    arrays: np.ndarray  # (n, S, S, 3) uint8 Y'CbCr, letterboxed
    text_ids: list[list[int]]
    texts: list[str]
    domains: list[str]
    weights: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        if self.weights is None:
            self.weights = np.ones(len(self.arrays), dtype=np.float64)
        if not (len(self.arrays) == len(self.text_ids) == len(self.domains) == len(self.weights)):
            raise ValueError("TrainSet fields differ in length")

    def __len__(self) -> int:
        return len(self.arrays)

    def digest(self) -> str:
        h = hashlib.sha256()
        for i in range(0, len(self.arrays), 256):  # in chunks: ``arrays`` may be a disk-backed memmap
            h.update(np.ascontiguousarray(self.arrays[i:i + 256]).tobytes())
        h.update(json.dumps([self.text_ids, self.texts, self.domains], sort_keys=True).encode())
        h.update(np.asarray(self.weights, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        doms: dict[str, dict[str, float]] = {}
        w = np.asarray(self.weights, dtype=np.float64)
        for d, wi in zip(self.domains, w):
            rec = doms.setdefault(d, {"images": 0, "weight": 0.0})
            rec["images"] += 1
            rec["weight"] += float(wi)
        total = float(w.sum()) or 1.0
        return {d: {"images": int(r["images"]), "share": round(r["weight"] / total, 3)} for d, r in sorted(doms.items())}


@dataclass
class Sample:
    """One training item before preprocessing: pixels (float [0, 1] or uint8), its texts, its domain tag."""

    pixels: Any
    texts: list[str]
    domain: str = "default"
    weight: float = 1.0


def build_trainset(samples: Iterable[Sample], size: int, *, workers: int = 2, textless: bool = False) -> TrainSet:
    """Load and letterbox every image to ``size`` (threads) and collect its texts into a shared vocabulary.

    Each image is reduced to its (size, size, 3) uint8 array as soon as it is decoded, so memory holds one
    full-resolution image per worker, not the corpus. A sample whose loader returns ``None`` (an undecodable file)
    is dropped, and so is a sample without text unless ``textless`` (it then trains the image–image term only)."""
    from ragmed.encoders.tower import letterbox_array_uint8

    samples = [s for s in samples if s.texts or textless]

    def prep(s: Sample) -> np.ndarray | None:
        px = s.pixels() if callable(s.pixels) else s.pixels
        if px is None:
            return None
        a = np.asarray(px)
        return letterbox_array_uint8(a, size) if a.dtype == np.uint8 else letterbox_uint8(a, size)

    arrays = np.empty((len(samples), size, size, 3), dtype=np.uint8)  # filled in place: no second copy
    ok = np.zeros(len(samples), dtype=bool)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, a in enumerate(pool.map(prep, samples)):
            if a is not None:
                arrays[i], ok[i] = a, True
    if not ok.all():
        arrays = arrays[ok]
        samples = [s for s, good in zip(samples, ok) if good]
    vocab: dict[str, int] = {}
    text_ids = [[vocab.setdefault(t, len(vocab)) for t in dict.fromkeys(s.texts)] for s in samples]
    return TrainSet(arrays=arrays, text_ids=text_ids, texts=list(vocab), domains=[s.domain for s in samples],
                    weights=np.array([s.weight for s in samples], dtype=np.float64))


# --- augmentation -----------------------------------------------------------------------------------------------
def augment(x, gen, strength: float = 1.0):
    """``x``: (B, 3, S, S) float in [0, 1] (luma, chroma with 0.5 neutral). Geometric + luma jitter; no flips.
    ``strength`` scales every range (1: zoom 0.7–1, ±10°, gamma e^±0.25, contrast ±20 %, brightness ±0.08).
    Above 1 (strong views for the image–image term) it also blurs (up to a 3×3 box filter, mixed in by up to
    ``strength - 1``) and scales the chroma planes by up to ±15 % × strength (stain / colour variation); the zoom
    never goes below 0.2."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]

    def u(lo, hi):
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    k = float(strength)
    scale = u(max(0.2, 1 - 0.3 * k), 1.0)
    aspect = torch.exp(u(-0.1 * k, 0.1 * k))
    ang = u(-10 * k, 10 * k) * math.pi / 180
    sx, sy = scale * aspect.sqrt(), scale / aspect.sqrt()
    tx, ty = u(-1, 1) * (1 - sx).clamp(min=0), u(-1, 1) * (1 - sy).clamp(min=0)
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([sx * cos, -sy * sin, tx], 1), torch.stack([sx * sin, sy * cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    pad = torch.tensor([0.0, 0.5, 0.5]).view(1, 3, 1, 1)
    x = F.grid_sample(x - pad, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + pad
    y = x[:, :1].clamp(0, 1)
    gamma = torch.exp(u(-0.25 * k, 0.25 * k)).view(b, 1, 1, 1)
    contrast = u(1 - 0.2 * k, 1 + 0.2 * k).view(b, 1, 1, 1)
    bright = u(-0.08 * k, 0.08 * k).view(b, 1, 1, 1)
    noise = u(0, 0.02 * k).view(b, 1, 1, 1) * torch.randn(y.shape, generator=gen)
    y = (y.pow(gamma) * contrast + bright + noise).clamp(0, 1)
    c = x[:, 1:]
    if k > 1:
        mix = u(0, min(1.0, k - 1)).view(b, 1, 1, 1)
        y = y + mix * (F.avg_pool2d(y, 3, 1, 1, count_include_pad=False) - y)
        sat = u(1 - 0.15 * k, 1 + 0.15 * k).clamp(min=0).view(b, 1, 1, 1)
        c = ((c - 0.5) * sat + 0.5).clamp(0, 1)
    return torch.cat([y, c], dim=1)


def normalise(x, pre: PreprocessConfig):
    import torch

    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def multi_positive_infonce(a, b, pos, scale):
    """Symmetric InfoNCE between rows of ``a`` and ``b`` (both L2-normalised); ``pos`` (B, B) bool marks positives."""
    import torch

    logits = scale * a @ b.t()
    p = pos.float()
    l1 = -(p / p.sum(1, keepdim=True) * torch.log_softmax(logits, 1)).sum(1).mean()
    l2 = -(p / p.sum(0, keepdim=True) * torch.log_softmax(logits, 0)).sum(0).mean()
    return (l1 + l2) / 2


# --- checkpoints ------------------------------------------------------------------------------------------------
def _save_checkpoint(ckdir: Path, model, opt, logit_scale, meta: dict) -> None:
    import os

    from safetensors.torch import save_file

    ckdir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors["logit_scale"] = logit_scale.detach().clone()
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        st = opt.state.get(p, {})
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = (v if hasattr(v, "detach") else __import__("torch").tensor(v)).detach().clone().contiguous()
    tmp = ckdir / "state.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, ckdir / "state.safetensors")
    (ckdir / "state.json.tmp").write_text(json.dumps(meta))
    os.replace(ckdir / "state.json.tmp", ckdir / "state.json")


def _load_checkpoint(ckdir: Path, model, opt, logit_scale) -> dict:
    import torch
    from safetensors.torch import load_file

    t = load_file(str(ckdir / "state.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    with torch.no_grad():
        logit_scale.copy_(t["logit_scale"])
    params = [p for g in opt.param_groups for p in g["params"]]
    for key, v in t.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            opt.state[params[int(i)]][name] = v
    return json.loads((ckdir / "state.json").read_text())


# --- training ---------------------------------------------------------------------------------------------------
def train_tower(data: TrainSet, out: str | Path, text_encoder, *, config: TrainConfig | None = None,
                tower: TowerConfig | None = None, preprocess: PreprocessConfig | None = None,
                init: str | Path | None = None, progress: bool = True, info: dict[str, Any] | None = None,
                id_prefix: str = "ragmed-default", stop_after_steps: int | None = None,
                desc: str | None = None) -> Path:
    """Train (or, with ``init``, fine-tune) the tower on ``data`` and write the model directory ``out``.

    Returns ``out``. ``stop_after_steps`` stops early as if killed (for resume tests).
    """
    import torch
    from tqdm import tqdm

    from ragmed.encoders.default import read_model_dir, save_model_dir
    from ragmed.encoders.memory import trim_heap
    from ragmed.encoders.text import set_torch_threads
    from ragmed.encoders.tower import build_tower

    cfg = config or TrainConfig()
    out = Path(out)
    if len(data) < 2:
        raise EncoderError("need at least two images with text to train", path=str(out))
    if init is not None:
        md = read_model_dir(init)
        init_dir = md["path"]
        tower = TowerConfig.from_dict(md["config"]["tower"])
        preprocess = PreprocessConfig.from_dict(md["preprocess"])
    tower = tower or TowerConfig()
    preprocess = preprocess or PreprocessConfig()
    if data.arrays.shape[1] != preprocess.size:
        raise EncoderError(f"training images are {data.arrays.shape[1]} px, the model expects {preprocess.size} px")
    if text_encoder.dim != tower.embed_dim:
        raise EncoderError(f"text encoder {text_encoder.id} is {text_encoder.dim}-d, the tower {tower.embed_dim}-d")
    tower.space = text_encoder.space or text_encoder.id
    set_torch_threads(cfg.threads)
    run_key = hashlib.sha256(json.dumps([data.digest(), cfg.to_dict(), tower.to_dict(), preprocess.to_dict(),
                                         str(init), text_encoder.id], sort_keys=True, default=str).encode()).hexdigest()[:16]
    ckdir = out.parent / f".{out.name}.checkpoint"

    t_text = time.perf_counter()
    if any(not ids for ids in data.text_ids) and cfg.ssl_weight <= 0:
        raise EncoderError("images without text can only train the image–image term: set ssl_weight > 0",
                           path=str(out))
    text_vecs = (torch.from_numpy(np.asarray(text_encoder.encode_texts(data.texts), dtype=np.float32)) if data.texts
                 else torch.zeros((1, tower.embed_dim)))
    t_text = time.perf_counter() - t_text
    trim_heap()  # the text encoder's freed batches (hundreds of MB for long reports) back to the OS before training

    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's global RNG
        torch.manual_seed(cfg.seed)  # parameter initialisation only; sampling uses its own generators
        model = build_tower(tower)
    if init is not None:
        from ragmed.encoders.default import load_tower

        model = load_tower(init_dir, tower)
    model.train()
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / cfg.init_temperature)))
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay + [logit_scale], "weight_decay": 0.0}], lr=cfg.lr)
    epoch_size = int(cfg.epoch_size or len(data))
    steps_per_epoch = max(1, epoch_size // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warm = max(1, int(total * cfg.warmup_frac))

    def lr_at(step):
        if step < warm:
            return cfg.lr * (step + 1) / warm
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    start_step = 0
    history: list[dict[str, float]] = []
    if (ckdir / "state.json").exists():
        try:
            meta = json.loads((ckdir / "state.json").read_text())
            if meta.get("run_key") == run_key:
                meta = _load_checkpoint(ckdir, model, opt, logit_scale)
                start_step, history = int(meta["step"]), meta.get("history", [])
                log.info("resuming from step %d of %d (%s)", start_step, total, ckdir)
        except Exception as e:  # a corrupt checkpoint: start over, loudly
            log.warning("ignoring unreadable checkpoint %s: %s", ckdir, e)
            start_step, history = 0, []

    w = np.asarray(data.weights, dtype=np.float64)
    w = w / w.sum()
    bar = tqdm(total=total, initial=start_step, desc=desc or f"training {out.name}", unit="step", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
    t0 = time.perf_counter()
    step = start_step
    run_loss = 0.0
    while step < total:
        epoch, k = divmod(step, steps_per_epoch)
        rng = np.random.default_rng([cfg.seed, epoch])  # the epoch's sample order is a function of (seed, epoch)
        order = rng.choice(len(data), size=steps_per_epoch * cfg.batch_size, replace=True, p=w)
        text_pick = rng.random(len(order))
        gen.manual_seed(cfg.seed * 100003 + step)  # augmentation randomness depends only on (seed, step)
        idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
        tids = np.array([data.text_ids[i][int(text_pick[k * cfg.batch_size + j] * len(data.text_ids[i]))]
                         if data.text_ids[i] else -1 for j, i in enumerate(idx)])
        x = torch.from_numpy(data.arrays[idx]).permute(0, 3, 1, 2).float().div_(255.0)
        tid_t, idx_t = torch.from_numpy(tids), torch.from_numpy(idx)
        pos = (tid_t[:, None] == tid_t[None, :]) | (idx_t[:, None] == idx_t[None, :])
        has_text = tid_t >= 0  # text-less images (self-supervised only) take no part in the image–text term
        t = text_vecs[tid_t.clamp(min=0)]
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        scale = logit_scale.exp().clamp(max=100)
        m = has_text if not bool(has_text.all()) else None

        def text_loss(zz):
            if m is None:
                return multi_positive_infonce(zz, t, pos, scale)
            if int(m.sum()) < 2:
                return zz.sum() * 0.0
            return multi_positive_infonce(zz[m], t[m], pos[m][:, m], scale)

        if cfg.ssl_weight > 0 and cfg.ssl_aug_strength > 0:
            views = torch.cat([augment(x, gen, cfg.aug_strength), augment(x, gen, cfg.ssl_aug_strength)])
            z = torch.nn.functional.normalize(model(normalise(views, preprocess)), dim=1)
            z1, z2 = z[: len(idx)], z[len(idx):]
            loss = text_loss(z1)
            same = idx_t[:, None] == idx_t[None, :]
            loss = loss + cfg.ssl_weight * multi_positive_infonce(z1, z2, same, 1 / cfg.ssl_temperature)
        elif cfg.ssl_weight > 0:
            z = torch.nn.functional.normalize(model(normalise(augment(torch.cat([x, x]), gen, cfg.aug_strength), preprocess)), dim=1)
            z1, z2 = z[: len(idx)], z[len(idx):]
            loss = (text_loss(z1) + text_loss(z2)) / 2
            same = idx_t[:, None] == idx_t[None, :]
            loss = loss + cfg.ssl_weight * multi_positive_infonce(z1, z2, same, 1 / cfg.ssl_temperature)
        else:
            z = torch.nn.functional.normalize(model(normalise(augment(x, gen, cfg.aug_strength), preprocess)), dim=1)
            loss = text_loss(z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        run_loss += float(loss.detach())
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", epoch=epoch + 1)
        end_of_epoch = step % steps_per_epoch == 0
        if end_of_epoch:
            history.append({"epoch": epoch + 1, "loss": run_loss / steps_per_epoch,
                            "temperature": float(1 / logit_scale.detach().exp())})
            run_loss = 0.0
        if end_of_epoch or step % cfg.checkpoint_every == 0 or step == total:
            _save_checkpoint(ckdir, model, opt, logit_scale, {"run_key": run_key, "step": step, "total": total,
                                                             "history": history})
        if stop_after_steps is not None and step - start_step >= stop_after_steps and step < total:
            bar.close()
            raise KeyboardInterrupt(f"stopped after {stop_after_steps} steps (test hook)")
    bar.close()
    model.eval()
    train_info = {
        "training": {"config": cfg.to_dict(), "steps": total, "resumed_from_step": start_step,
                     "seconds": round(time.perf_counter() - t0, 1), "text_seconds": round(t_text, 1),
                     "text_encoder": text_encoder.id, "data": data.summary(), "data_digest": data.digest(),
                     "n_texts": len(data.texts), "history": history, "init": str(init) if init else None},
    }
    train_info.update(info or {})
    save_model_dir(model, out, tower=tower, preprocess=preprocess, info=train_info, id_prefix=id_prefix)
    import shutil

    shutil.rmtree(ckdir, ignore_errors=True)
    return out


# --- corpora ----------------------------------------------------------------------------------------------------
def samples_from_corpus(corpus, *, text_fields: Sequence[str] = (), skipped: list | None = None,
                        textless: bool = False) -> list[Sample]:
    """One sample per (case, image) with the case's text (report, else findings + impression), plus any metadata
    fields named in ``text_fields`` rendered as ``"field: value"``. Undecodable images are skipped (and listed in
    ``skipped`` when given). Images of cases without text are left out unless ``textless``."""
    from ragmed.errors import RagmedError
    from ragmed.io import load_image

    out: list[Sample] = []
    for case in corpus.cases:
        texts = [case.text] if case.text else []
        texts += [f"{f.replace('_', ' ')}: {case.metadata[f]}" for f in text_fields if case.metadata.get(f)]
        if not texts and not textless:
            continue
        for p in case.images:
            def load(p=p):
                try:
                    return load_image(p, root=corpus.root).pixels
                except RagmedError as e:
                    if skipped is not None:
                        skipped.append((case.id, str(e)))
                    return None
            out.append(Sample(pixels=load, texts=texts, domain=case.metadata.get("domain", "corpus")))
    return out


def fit_sample(n: int, max_images: int | None, seed: int = 0) -> np.ndarray:
    """Which of ``n`` candidate images (corpus order) :func:`fit_to_corpus` fits on: all, or a seeded sample of
    ``max_images`` (sorted)."""
    if max_images is None or n <= max_images:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=int(max_images), replace=False))


def check_fittable(encoder, text_encoder) -> None:
    """Raise :class:`~ragmed.errors.ConfigError` unless ``encoder`` is a ragmed-default tower in ``text_encoder``'s
    space (what :func:`fit_to_corpus` can fit); callers check before a long decode pass, not after it."""
    from ragmed.encoders.default import RagmedImageEncoder
    from ragmed.errors import ConfigError

    if not isinstance(encoder, RagmedImageEncoder):
        raise ConfigError(f"index.fit_image_encoder needs the ragmed-default image encoder, not {encoder.id!r}",
                          remedy="set encoders.image.name: ragmed-default, or fit_image_encoder: false")
    if encoder.space != text_encoder.space:
        raise ConfigError(f"cannot fit {encoder.id} (space {encoder.space!r}) to text encoder {text_encoder.id} "
                          f"(space {text_encoder.space!r})")


def fit_to_corpus(encoder, corpus, text_encoder, epochs: int = 10, work_dir: str | Path | None = None,
                  progress: bool = True, *, lr: float = 5e-4, seed: int = 0, ssl_weight: float = 3.0,
                  ssl_aug_strength: float = 2.0, batch_size: int = 64, min_steps: int = 200,
                  max_steps: int = 2000, max_images: int | None = 4096, trainset: TrainSet | None = None):
    """Fine-tune a ragmed-default image encoder on ``corpus`` and return the fitted encoder.

    Two signals, both from the corpus itself: each image–report pair (InfoNCE into the frozen text space, as in
    training) and, with ``ssl_weight`` > 0, every image, report or not, against a strongly augmented view of itself
    (image–image InfoNCE), which adapts the tower to the corpus's modality with no labels at all. ``epochs`` passes
    over the corpus's images, bounded to ``min_steps``–``max_steps`` batches (a few minutes on a CPU either way).
    A corpus of more than ``max_images`` images is fitted on a random sample of that many (seeded), so memory
    stays bounded however large the corpus.

    The result is saved in ``work_dir/model`` (a normal model directory: ``create_encoder("ragmed-default",
    path=work_dir/"model")`` loads it) and its id is ``ragmed-default-fit-<corpus checksum>@<weights hash>``, so an
    index records which fitted encoder built it. A second call with the same encoder, corpus and settings reuses the
    saved model; an interrupted fit resumes from its checkpoint.

    ``trainset``: the corpus's images already decoded and preprocessed (the index build's own, sampled as above), used
    instead of decoding the corpus here.
    """
    import tempfile

    from ragmed.encoders.default import RagmedImageEncoder, read_model_dir

    check_fittable(encoder, text_encoder)
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="ragmed-fit-"))
    work.mkdir(parents=True, exist_ok=True)
    target = work / "model"
    fit_rec = {"base": encoder.id, "corpus": corpus.checksum(), "epochs": int(epochs), "lr": lr, "seed": seed,
               "ssl_weight": float(ssl_weight), "ssl_aug_strength": float(ssl_aug_strength),
               "batch_size": int(batch_size), "min_steps": int(min_steps), "max_steps": int(max_steps),
               "max_images": max_images}
    if target.exists():
        try:
            if read_model_dir(target)["config"].get("fit") == fit_rec:
                return RagmedImageEncoder(target, batch_size=encoder.batch_size, threads=encoder.threads)
        except RagmedError:  # an incomplete or unreadable earlier fit: fit again
            pass
    skipped: list = []
    ssl = ssl_weight > 0
    if trainset is not None:
        data = trainset
    else:
        samples = samples_from_corpus(corpus, skipped=skipped, textless=ssl)
        if max_images is not None and len(samples) > max_images:
            keep = fit_sample(len(samples), max_images, seed)
            samples = [samples[i] for i in keep]
        data = build_trainset(samples, encoder.preprocess_config.size, textless=ssl)
    if len(data) < 2:
        raise EncoderError("cannot fit the image encoder: fewer than two decodable images"
                           + ("" if ssl else " with report text"), path=str(corpus.source))
    bs = int(min(batch_size, max(2, len(data))))
    epochs = max(1, int(epochs))
    steps = min(max(epochs * len(data) // bs, int(min_steps), 1), max(1, int(max_steps)))
    per_epoch = -(-steps // epochs)  # batches per epoch; total = epochs × per_epoch ≈ steps
    cfg = TrainConfig(epochs=epochs, batch_size=bs, lr=lr, seed=seed, warmup_frac=0.1,
                      epoch_size=per_epoch * bs, checkpoint_every=25, threads=encoder.threads,
                      ssl_weight=float(ssl_weight), ssl_aug_strength=float(ssl_aug_strength) if ssl else 0.0,
                      aug_strength=0.35)
    train_tower(data, target, text_encoder, config=cfg, init=encoder.path, progress=progress,
                desc=f"fitting the image encoder to {len(data)} corpus images",
                info={"fit": fit_rec, "fit_skipped_images": len(skipped),
                      "fit_images_without_text": sum(1 for t in data.text_ids if not t)},
                id_prefix=f"ragmed-default-fit-{corpus.checksum()}")
    return RagmedImageEncoder(target, batch_size=encoder.batch_size, threads=encoder.threads)
