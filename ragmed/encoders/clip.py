"""Loaders for published medical image–text encoders, from local files only, with their published preprocessing.

Each two-tower model registers as kind ``both``: ``create_encoder(name, role="image"|"text", path=...)`` gives one
tower; both towers of one model share one loaded network (cached per path) and one ``space``, so image→report and
text→image search work between them.

- ``biomedclip``: open_clip's Hugging Face layout: ``open_clip_config.json`` + ``open_clip_pytorch_model.bin`` (or
  ``open_clip_model.safetensors``) + the tokenizer files (``vocab.txt``, ``tokenizer_config.json`` …). ViT-B/16 224 px
  (timm), PubMedBERT text tower, context 256, 512-d. Preprocessing as open_clip builds it from the config: resize the
  shortest side to 224 (bicubic), centre crop, RGB, OpenAI CLIP mean/std. The text tower's architecture comes from
  its Hugging Face config (``microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract``): give its local directory as
  ``text_model``, put it in ``DIR/text``, or have it in the Hugging Face cache.
- ``unimed-clip``: a UniMed-CLIP ``.pt`` checkpoint (``unimed_clip_vit_b16.pt``: ``arch: ViT-B-16``, 224 px, 512-d,
  BiomedBERT-base text tower; ``unimed_clip_vit_l14_base_text_encoder.pt``: ``arch: ViT-L-14-336``, 336 px, 768-d).
  QuickGELU vision transformer, text tower = BiomedBERT with CLS pooling and an MLP projection, context 256;
  preprocessing: shortest side to the input size (bicubic), centre crop, OpenAI CLIP mean/std. ``text_model``: the
  local BiomedBERT directory (config + tokenizer files).
- ``siglip`` / ``clip``: any transformers SigLIP / CLIP model directory (MedSigLIP-448 included), preprocessing from
  its own ``preprocessor_config.json`` and tokenizer; SigLIP pads text to ``max_length`` (64) as it was trained.
- ``medimageinsight``: the released MedImageInsight directory (``config.yaml``, ``vision_model/*.pt``,
  ``language_model/language_model.pth``, ``language_model/clip_tokenizer_*``): DaViT, 480×480 px (resized without
  crop, bicubic), ImageNet mean/std, CLIP tokenizer with context 77, 1024-d. Runs through its own package.

open_clip needs torchvision (``pip install 'ragmed[clip]'`` on the torch/torchvision pairing that imports; see
``.ci/clip-env.sh``). Nothing here downloads anything.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragmed.cache import BoundedCache
from ragmed.encoders.base import BaseImageEncoder, BaseTextEncoder
from ragmed.errors import ConfigError, EncoderError, ModelNotFoundError

if TYPE_CHECKING:
    from ragmed.io import MedicalImage

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
BIOMEDBERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"

OBTAIN = {
    "biomedclip": "on a machine with internet: `huggingface-cli download microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 "
                  "--local-dir DIR` and `huggingface-cli download microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract "
                  "config.json --local-dir DIR/text`; then name DIR as `path`",
    "unimed-clip": "download the checkpoint from the UniMed-CLIP release (github.com/mbzuai-oryx/UniMed-CLIP, "
                   "e.g. unimed_clip_vit_b16.pt) and the text tower config + tokenizer "
                   "(`huggingface-cli download microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract config.json vocab.txt "
                   "tokenizer_config.json special_tokens_map.json --local-dir TEXTDIR`); name the .pt as `path`, "
                   "TEXTDIR as `text_model`",
    "siglip": "`huggingface-cli download google/medsiglip-448 --local-dir DIR` (accept its licence first), or any "
              "SigLIP model; name DIR as `path`",
    "clip": "`huggingface-cli download openai/clip-vit-base-patch32 --local-dir DIR` (or any CLIP model); name DIR as `path`",
    "medimageinsight": "`git clone https://huggingface.co/lion-ai/MedImageInsights` (weights under 2024.09.27/) or the "
                       "Azure AI Foundry release; name the directory holding config.yaml as `path`",
}


def _need_dir(name: str, path: str | os.PathLike | None, what: str = "model directory") -> Path:
    if not path:
        raise ModelNotFoundError(f"{name} needs `path` (its local {what}); nothing is downloaded",
                                 remedy=OBTAIN[name])
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise ModelNotFoundError(f"{name} {what} not found", path=str(p), remedy=OBTAIN[name])
    return p


def _quick_digest(*files: Path) -> str:
    """A cheap identity for large weight files: size + SHA-256 of the first and last MiB."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if st.st_size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:12]


def _to_pil_rgb(im: "MedicalImage"):
    from PIL import Image

    return Image.fromarray(im.to_rgb_uint8(), mode="RGB")


# --- shared two-tower wrappers -----------------------------------------------------------------------------------
class TwoTowerBackend:
    """A loaded two-tower model: ``image_tensor(pil_list)``, ``encode_image(tensor)``, ``encode_text(texts)``."""

    name: str
    id: str
    dim: int
    image_size: int
    batch_size: int = 16

    def preprocess(self, pil):  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_image(self, pixel_values) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_text(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class TowerImageEncoder(BaseImageEncoder):
    def __init__(self, backend: TwoTowerBackend, batch_size: int | None = None):
        self.backend = backend
        self.id, self.dim, self.space = backend.id, backend.dim, backend.id
        self.batch_size = int(batch_size or backend.batch_size)

    def _encode_image_batch(self, images: list["MedicalImage"]) -> np.ndarray:
        import torch

        x = torch.stack([self.backend.preprocess(_to_pil_rgb(im)) for im in images])
        return self.backend.encode_image(x)


class TowerTextEncoder(BaseTextEncoder):
    def __init__(self, backend: TwoTowerBackend, batch_size: int | None = None):
        self.backend = backend
        self.id, self.dim, self.space = backend.id, backend.dim, backend.id
        self.batch_size = int(batch_size or 32)

    def encode_texts(self, texts):
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a sequence of strings, not one string")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._encode_text_batch(texts[i:i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        from ragmed.encoders.base import l2_normalise

        return l2_normalise(np.concatenate(parts))

    def _encode_text_batch(self, texts: list[str]) -> np.ndarray:
        return self.backend.encode_text([t or "" for t in texts])


_CACHE: BoundedCache[tuple, TwoTowerBackend] = BoundedCache(2)  # loaded models (one image + text pair each)


def _cached(key: tuple, build):
    return _CACHE.get_or_create(key, build)


def _make(role: str | None, backend_factory, key: tuple, batch_size: int | None):
    backend = _cached(key, backend_factory)
    if role in (None, "image"):
        return TowerImageEncoder(backend, batch_size)
    if role == "text":
        return TowerTextEncoder(backend, batch_size)
    raise ConfigError(f"role must be image or text, not {role!r}")


# --- open_clip: BiomedCLIP and UniMed-CLIP -----------------------------------------------------------------------
def _import_open_clip(name: str):
    try:
        import open_clip  # noqa: F401
    except Exception as e:  # ImportError, or torchvision failing to import beside this torch
        raise EncoderError(
            f"{name} needs open_clip, which could not be imported ({type(e).__name__}: {str(e).splitlines()[0][:160]})",
            remedy="use an environment with torch + torchvision that import together and `pip install open_clip_torch` "
                   "(e.g. `bash .ci/clip-env.sh` creates .venv-clip on torch 2.14.1 / torchvision 0.29.1)") from e
    return open_clip


def _resolve_text_model(name: str, root: Path | None, text_model: str | None, hf_name: str) -> str:
    """A local directory with the text tower's Hugging Face config.json; else the (offline) HF cache by name."""
    cands = [Path(os.path.expanduser(text_model))] if text_model else []
    if root is not None and root.is_dir():
        cands += [root / "text", root]
    for c in cands:
        cfg = c / "config.json"
        if cfg.exists():
            try:
                if "model_type" in json.loads(cfg.read_text()):
                    return str(c)
            except (OSError, json.JSONDecodeError):
                pass
    if text_model:
        raise ModelNotFoundError(f"{name}: text tower directory has no Hugging Face config.json", path=text_model,
                                 remedy=OBTAIN[name])
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(hf_name, "config.json")
        if isinstance(hit, str):
            return str(Path(hit).parent)
    except Exception:
        pass
    raise ModelNotFoundError(f"{name}: the text tower's config ({hf_name} config.json) is not available offline",
                             path=str(root) if root else None, remedy=OBTAIN[name])


class OpenClipBackend(TwoTowerBackend):
    def __init__(self, name: str, model, preprocess, tokenizer, ident: str, dim: int, image_size: int,
                 context_length: int):
        self.name, self.model, self._preprocess, self.tokenizer = name, model, preprocess, tokenizer
        self.id, self.dim, self.image_size, self.context_length = ident, dim, image_size, context_length

    def preprocess(self, pil):
        return self._preprocess(pil)

    def encode_image(self, x) -> np.ndarray:
        import torch

        from ragmed.encoders.text import set_torch_threads

        set_torch_threads()
        with torch.inference_mode():
            return self.model.encode_image(x).float().numpy()

    def encode_text(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model.encode_text(self.tokenizer(texts)).float().numpy()


def _load_open_clip_state(path: Path, trust_checkpoint: bool) -> dict:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=not trust_checkpoint)
        except Exception as e:
            raise EncoderError(f"cannot read checkpoint: {type(e).__name__}: {str(e).splitlines()[0][:200]}",
                               path=str(path),
                               remedy="if it holds more than tensors and you trust the file, set trust_checkpoint: true"
                               ) from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd:
        raise EncoderError("checkpoint holds no state dict", path=str(path))
    if next(iter(sd)).startswith("module."):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _strict_load(model, sd: dict, path: Path, name: str) -> None:
    sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}  # a buffer, absent in newer transformers
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatches raise even when strict=False
        detail = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise EncoderError(f"{name} checkpoint does not fit the published architecture: {detail[:240]}",
                           path=str(path), remedy="check `arch` (ViT-B-16 / ViT-L-14-336) and `text_model`") from e
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise EncoderError(f"{name} checkpoint does not fit the published architecture: "
                           f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                           f"(e.g. {unexpected[:2]})", path=str(path),
                           remedy="check `arch` (ViT-B-16 / ViT-L-14-336) and `text_model`")


def load_biomedclip(path: str | None = None, *, text_model: str | None = None, trust_checkpoint: bool = False):
    root = _need_dir("biomedclip", path)
    if not root.is_dir():
        raise ModelNotFoundError("biomedclip expects the model directory (open_clip_config.json + "
                                 "open_clip_pytorch_model.bin), not a file", path=str(root), remedy=OBTAIN["biomedclip"])
    cfg_file = root / "open_clip_config.json"
    weights = [root / n for n in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin") if (root / n).exists()]
    if not cfg_file.exists() or not weights:
        raise ModelNotFoundError("not an open_clip model directory: needs open_clip_config.json and "
                                 "open_clip_pytorch_model.bin", path=str(root), remedy=OBTAIN["biomedclip"])
    open_clip = _import_open_clip("biomedclip")
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    cfg = json.loads(cfg_file.read_text())
    model_cfg = dict(cfg["model_cfg"])
    text_cfg = dict(model_cfg.get("text_cfg", {}))
    if "hf_model_name" in text_cfg:
        text_cfg["hf_model_name"] = _resolve_text_model("biomedclip", root, text_model, text_cfg["hf_model_name"])
        text_cfg["hf_model_pretrained"] = False
    model_cfg["text_cfg"] = text_cfg
    vision = dict(model_cfg.get("vision_cfg", {}))
    vision["timm_model_pretrained"] = False
    model_cfg["vision_cfg"] = vision
    model = open_clip.CustomTextCLIP(**model_cfg) if "hf_model_name" in text_cfg else open_clip.CLIP(**model_cfg)
    _strict_load(model, _load_open_clip_state(weights[0], trust_checkpoint), weights[0], "biomedclip")
    model.eval()
    pp = PreprocessCfg(**merge_preprocess_dict(PreprocessCfg(), {"size": vision.get("image_size", 224),
                                                                  **cfg.get("preprocess_cfg", {})}))
    preprocess = image_transform_v2(pp, is_train=False)
    ctx = int(text_cfg.get("context_length", 256))
    tokenizer = open_clip.tokenizer.HFTokenizer(str(root), context_length=ctx)
    ident = f"biomedclip:{root.name}@{_quick_digest(weights[0])}"
    size = pp.size if isinstance(pp.size, int) else pp.size[0]
    return OpenClipBackend("biomedclip", model, preprocess, tokenizer, ident, int(model_cfg["embed_dim"]), size, ctx)


UNIMED_ARCHS = {"ViT-B-16": ("ViT-B-16-quickgelu", 512, 224), "ViT-L-14-336": ("ViT-L-14-336-quickgelu", 768, 336)}


def unimed_model_cfg(arch: str, text_dir: str) -> tuple[dict, int]:
    """open_clip model config reproducing UniMed-CLIP's variant: the QuickGELU ViT of ``arch`` and a Hugging Face
    BiomedBERT text tower (CLS of the last hidden state, MLP projection), context 256."""
    if arch not in UNIMED_ARCHS:
        raise ConfigError(f"unimed-clip arch must be one of {', '.join(UNIMED_ARCHS)}, not {arch!r}")
    import open_clip

    base_name, dim, size = UNIMED_ARCHS[arch]
    base = open_clip.get_model_config(base_name)
    cfg = {"embed_dim": base["embed_dim"], "quick_gelu": True, "vision_cfg": dict(base["vision_cfg"]),
           "text_cfg": {"hf_model_name": text_dir, "hf_tokenizer_name": text_dir, "hf_proj_type": "mlp",
                        "hf_pooler_type": "cls_last_hidden_state_pooler", "hf_model_pretrained": False,
                        "context_length": 256}}
    return cfg, size


def load_unimed_clip(path: str | None = None, *, arch: str = "ViT-B-16", text_model: str | None = None,
                     trust_checkpoint: bool = False, vision_overrides: dict | None = None):
    ckpt = _need_dir("unimed-clip", path, "checkpoint (.pt)")
    if ckpt.is_dir():
        pts = sorted(ckpt.glob("*.pt"))
        if len(pts) != 1:
            raise ModelNotFoundError("unimed-clip `path` must name the .pt checkpoint (or a directory holding "
                                     "exactly one)", path=str(ckpt), remedy=OBTAIN["unimed-clip"])
        ckpt = pts[0]
    open_clip = _import_open_clip("unimed-clip")
    from open_clip.transform import PreprocessCfg, image_transform_v2

    text_dir = _resolve_text_model("unimed-clip", ckpt.parent, text_model, BIOMEDBERT)
    cfg, size = unimed_model_cfg(arch, text_dir)
    if vision_overrides:  # tests only: a tiny tower in the same format
        cfg["vision_cfg"].update(vision_overrides)
        size = int(cfg["vision_cfg"].get("image_size", size))
    model = open_clip.CustomTextCLIP(**cfg)
    sd = _load_open_clip_state(ckpt, trust_checkpoint)
    # UniMed-CLIP names its text tower `text_encoder`; open_clip's CustomTextCLIP names it `text`.
    sd = {("text." + k[len("text_encoder."):] if k.startswith("text_encoder.") else k): v for k, v in sd.items()}
    _strict_load(model, sd, ckpt, "unimed-clip")
    model.eval()
    pp = PreprocessCfg(size=size, mode="RGB", mean=OPENAI_MEAN, std=OPENAI_STD, interpolation="bicubic",
                       resize_mode="shortest", fill_color=0)
    tokenizer = open_clip.tokenizer.HFTokenizer(text_dir, context_length=256)
    ident = f"unimed-clip:{arch}:{ckpt.stem}@{_quick_digest(ckpt)}"
    return OpenClipBackend("unimed-clip", model, image_transform_v2(pp, is_train=False), tokenizer, ident,
                           int(cfg["embed_dim"]), size, 256)


# --- transformers: SigLIP (MedSigLIP) and CLIP -------------------------------------------------------------------
class HFClipBackend(TwoTowerBackend):
    def __init__(self, name: str, root: Path):
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

        try:
            config = AutoConfig.from_pretrained(str(root), local_files_only=True)
        except Exception as e:
            raise ModelNotFoundError(f"{name}: not a transformers model directory ({str(e).splitlines()[0][:160]})",
                                     path=str(root), remedy=OBTAIN[name]) from e
        want = "siglip" if name == "siglip" else "clip"
        if want not in config.model_type:
            raise ConfigError(f"{name}: {root} holds a {config.model_type!r} model; use the "
                              f"{'clip' if want == 'siglip' else 'siglip'} loader" if config.model_type in ("clip", "siglip", "siglip2")
                              else f"{name}: {root} holds a {config.model_type!r} model, not {want}")
        self.name = name
        self.model = AutoModel.from_pretrained(str(root), local_files_only=True).eval()
        self.processor = AutoImageProcessor.from_pretrained(str(root), local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(str(root), local_files_only=True)
        tc = config.text_config
        self.max_length = int(getattr(tc, "max_position_embeddings", 64) or 64)
        self.pad_max = config.model_type.startswith("siglip")  # SigLIP was trained on max_length-padded text
        self.dim = int(getattr(config, "projection_dim", 0) or config.vision_config.hidden_size)
        self.image_size = int(config.vision_config.image_size)
        weights = sorted(root.glob("*.safetensors")) or sorted(root.glob("*.bin"))
        self.id = f"{name}:{root.name}@{_quick_digest(*weights) if weights else 'noweights'}"

    def preprocess(self, pil):
        return self.processor(images=pil, return_tensors="pt")["pixel_values"][0]

    @staticmethod
    def _as_tensor(out):
        if hasattr(out, "pooler_output") and not hasattr(out, "shape"):
            return out.pooler_output
        return out

    def encode_image(self, x) -> np.ndarray:
        import torch

        from ragmed.encoders.text import set_torch_threads

        set_torch_threads()
        with torch.inference_mode():
            return self._as_tensor(self.model.get_image_features(pixel_values=x)).float().numpy()

    def encode_text(self, texts: list[str]) -> np.ndarray:
        import torch

        tok = self.tokenizer(texts, padding="max_length" if self.pad_max else True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        kw = {"input_ids": tok["input_ids"]}
        if "attention_mask" in tok and not self.pad_max:
            kw["attention_mask"] = tok["attention_mask"]
        with torch.inference_mode():
            return self._as_tensor(self.model.get_text_features(**kw)).float().numpy()


def load_hf_clip(name: str, path: str | None):
    root = _need_dir(name, path)
    if not root.is_dir() or not (root / "config.json").exists():
        raise ModelNotFoundError(f"{name}: not a transformers model directory (no config.json)", path=str(root),
                                 remedy=OBTAIN[name])
    return HFClipBackend(name, root)


# --- MedImageInsight ---------------------------------------------------------------------------------------------
def detect_medimageinsight(path: str | None) -> dict[str, Any]:
    """Check the released layout and read the published preprocessing from ``config.yaml``.

    Returns ``{"root", "config", "vision", "language", "tokenizer", "image_size", "mean", "std", "context_length",
    "dim", "interpolation", "center_crop"}``; raises ModelNotFoundError naming what is missing."""
    import yaml

    root = _need_dir("medimageinsight", path)
    if root.is_dir() and not (root / "config.yaml").exists():
        dated = sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.yaml").exists())
        if dated:
            root = dated[-1]  # the repository root: weights live in a dated folder (2024.09.27/)
    missing = []
    cfg_file = root / "config.yaml"
    vis = sorted((root / "vision_model").glob("*.pt")) if (root / "vision_model").is_dir() else []
    lang = root / "language_model" / "language_model.pth"
    tok = sorted(p for p in (root / "language_model").glob("clip_tokenizer*") if p.is_dir()) if (root / "language_model").is_dir() else []
    if not cfg_file.exists():
        missing.append("config.yaml")
    if not vis:
        missing.append("vision_model/*.pt")
    if not lang.exists():
        missing.append("language_model/language_model.pth")
    if not tok:
        missing.append("language_model/clip_tokenizer_*/")
    if missing:
        raise ModelNotFoundError(f"not a MedImageInsight model directory: missing {', '.join(missing)}",
                                 path=str(root), remedy=OBTAIN["medimageinsight"])
    cfg = yaml.safe_load(cfg_file.read_text()) or {}
    ie, le, um = cfg.get("IMAGE_ENCODER", {}), cfg.get("LANG_ENCODER", {}), cfg.get("UNICL_MODEL", {})
    size = ie.get("IMAGE_SIZE", [480, 480])
    return {"root": root, "config": cfg_file, "vision": vis[0], "language": lang, "tokenizer": tok[-1],
            "image_size": [int(s) for s in size] if isinstance(size, list) else [int(size)] * 2,
            "mean": [float(v) for v in ie.get("IMAGE_MEAN", [0.485, 0.456, 0.406])],
            "std": [float(v) for v in ie.get("IMAGE_STD", [0.229, 0.224, 0.225])],
            "context_length": int(le.get("CONTEXT_LENGTH", 77)), "dim": int(um.get("DIM_PROJECTION", 1024)),
            "interpolation": cfg.get("AUG", {}).get("INTERPOLATION", "bicubic"),
            "center_crop": bool(cfg.get("TEST", {}).get("CENTER_CROP", False))}


def medimageinsight_preprocess(pil, spec: dict[str, Any]) -> np.ndarray:
    """The published evaluation transform: resize to IMAGE_SIZE (no crop unless TEST.CENTER_CROP), RGB, /255,
    normalise with IMAGE_MEAN / IMAGE_STD. Returns (3, H, W) float32."""
    from PIL import Image

    h, w = spec["image_size"]
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}.get(spec["interpolation"], Image.BICUBIC)
    pil = pil.convert("RGB")
    if spec["center_crop"]:
        s = max(h, w) / min(pil.size)
        pil = pil.resize((round(pil.size[0] * s), round(pil.size[1] * s)), resample)
        left, top = (pil.size[0] - w) // 2, (pil.size[1] - h) // 2
        pil = pil.crop((left, top, left + w, top + h))
    else:
        pil = pil.resize((w, h), resample)
    a = np.asarray(pil, dtype=np.float32) / 255.0
    a = (a - np.array(spec["mean"], np.float32)) / np.array(spec["std"], np.float32)
    return a.transpose(2, 0, 1).copy()


MEDIMAGEINSIGHT_INSTALL = ("MedImageInsight runs through its own code, which ragmed does not vendor: either "
                           "`pip install medimageinsights` (a third-party packaging of the Lion-AI repository) or "
                           "`git clone https://huggingface.co/lion-ai/MedImageInsights` and put that directory on "
                           "PYTHONPATH (it provides medimageinsightmodel.py)")


def _import_medimageinsight():
    for mod in ("medimageinsightmodel", "MedImageInsights.Models.medimageinsightmodel"):
        try:
            m = __import__(mod, fromlist=["MedImageInsight"])
            return m.MedImageInsight
        except ImportError:
            continue
    return None


class MedImageInsightBackend(TwoTowerBackend):
    def __init__(self, spec: dict[str, Any]):
        cls = _import_medimageinsight()
        if cls is None:
            raise EncoderError("the MedImageInsight package is not installed", path=str(spec["root"]),
                               remedy=MEDIMAGEINSIGHT_INSTALL)
        self.spec = spec
        m = cls(model_dir=str(spec["root"]), vision_model_name=spec["vision"].name,
                language_model_name=spec["language"].name)
        m.load_model()
        self.impl = m
        self.name = "medimageinsight"
        self.dim = spec["dim"]
        self.image_size = spec["image_size"][0]
        self.id = f"medimageinsight:{spec['vision'].stem}@{_quick_digest(spec['vision'])}"

    def preprocess(self, pil):
        import torch

        return torch.from_numpy(medimageinsight_preprocess(pil, self.spec))

    def encode_image(self, x) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.impl.model.encode_image(x.to(self.impl.device)).float().cpu().numpy()

    def encode_text(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.impl.encode(texts=texts)["text_embeddings"], dtype=np.float32)


# --- factories (registered in ragmed/encoders/__init__.py) -------------------------------------------------------
def biomedclip(role: str | None = None, path: str | None = None, text_model: str | None = None,
               batch_size: int | None = None, trust_checkpoint: bool = False):
    key = ("biomedclip", str(path), str(text_model))
    return _make(role, lambda: load_biomedclip(path, text_model=text_model, trust_checkpoint=trust_checkpoint), key,
                 batch_size)


def unimed_clip(role: str | None = None, path: str | None = None, arch: str = "ViT-B-16",
                text_model: str | None = None, batch_size: int | None = None, trust_checkpoint: bool = False,
                vision_overrides: dict | None = None):
    key = ("unimed-clip", str(path), arch, str(text_model), json.dumps(vision_overrides, sort_keys=True))
    return _make(role, lambda: load_unimed_clip(path, arch=arch, text_model=text_model,
                                                trust_checkpoint=trust_checkpoint, vision_overrides=vision_overrides),
                 key, batch_size)


def siglip(role: str | None = None, path: str | None = None, batch_size: int | None = None):
    return _make(role, lambda: load_hf_clip("siglip", path), ("siglip", str(path)), batch_size)


def clip(role: str | None = None, path: str | None = None, batch_size: int | None = None):
    return _make(role, lambda: load_hf_clip("clip", path), ("clip", str(path)), batch_size)


def medimageinsight(role: str | None = None, path: str | None = None, batch_size: int | None = None):
    spec = detect_medimageinsight(path)
    return _make(role, lambda: MedImageInsightBackend(spec), ("medimageinsight", str(spec["root"])), batch_size)
