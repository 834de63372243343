"""``ragmed-default``: the image encoder that ragmed trains itself and ships (``ragmed/encoders/weights/ragmed-default``).

A model directory holds ``config.json`` (architecture, space, id, provenance), ``model.safetensors`` and
``preprocess.json`` (see :mod:`ragmed.encoders.tower`). ``create_encoder("ragmed-default")`` loads the shipped
weights; ``create_encoder("ragmed-default", path=DIR)`` loads a directory written by ``ragmed encoder train`` or by
:func:`ragmed.encoders.fit_to_corpus`.

Encoding is batched under ``torch.inference_mode`` with torch's threads set for the machine; the letterbox resize of
batch *i+1* runs in a thread pool (PIL releases the GIL) while batch *i* is in the network.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragmed.encoders.base import BaseImageEncoder, l2_normalise
from ragmed.encoders.tower import PreprocessConfig, TowerConfig, letterbox_uint8, to_tensor_batch
from ragmed.errors import EncoderError, ModelNotFoundError
from ragmed.io.image import content_hash

if TYPE_CHECKING:
    from ragmed.io import MedicalImage

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_NAME = "ragmed-default"
FILES = ("config.json", "model.safetensors", "preprocess.json")


def shipped_path() -> Path:
    return WEIGHTS_DIR / DEFAULT_NAME


def check_model_dir(path: str | Path) -> Path:
    p = Path(path)
    how = ("train one with `ragmed encoder train --corpus MANIFEST --out DIR`, or omit `path` to use the shipped "
           "ragmed-default weights")
    if not p.exists():
        raise ModelNotFoundError("ragmed-default model directory not found", path=str(p), remedy=how)
    if not p.is_dir():
        raise ModelNotFoundError("ragmed-default expects a model directory (config.json, model.safetensors, "
                                 "preprocess.json), not a file", path=str(p), remedy=how)
    missing = [f for f in FILES if not (p / f).exists()]
    if missing:
        raise ModelNotFoundError(f"not a ragmed-default model directory: missing {', '.join(missing)}", path=str(p),
                                 remedy=how)
    return p


def read_model_dir(path: str | Path) -> dict[str, Any]:
    """The one reader of a ragmed-default model directory's JSON: ``{"path", "config", "preprocess"}`` (dicts)."""
    p = check_model_dir(path)
    try:
        return {"path": p, "config": json.loads((p / "config.json").read_text()),
                "preprocess": json.loads((p / "preprocess.json").read_text())}
    except (OSError, json.JSONDecodeError) as e:
        raise EncoderError(f"unreadable model configuration: {e}", path=str(p)) from e


class RagmedImageEncoder(BaseImageEncoder):
    """The ragmed-default image tower, loaded from a model directory."""

    def __init__(self, path: str | Path | None = None, *, batch_size: int = 64, threads: int | None = None,
                 preprocess_workers: int = 2, device: str = "auto", allow_tf32: bool = False):
        md = read_model_dir(path if path is not None else shipped_path())
        self.path = md["path"]
        try:
            self.config: dict[str, Any] = md["config"]
            self.preprocess_config = PreprocessConfig.from_dict(md["preprocess"])
        except TypeError as e:
            raise EncoderError(f"unreadable model configuration: {e}", path=str(self.path)) from e
        self.tower_config = TowerConfig.from_dict(self.config.get("tower", {}))
        self.dim = int(self.tower_config.embed_dim)
        self.space = self.config.get("space") or self.tower_config.space
        self.id = self.config.get("id") or f"{DEFAULT_NAME}@{content_hash(self.path / 'model.safetensors')[:12]}"
        self.batch_size = int(batch_size)
        self.threads = threads
        self.preprocess_workers = max(1, int(preprocess_workers))
        self.device = device  # "auto": CUDA when torch sees a GPU, else the CPU
        # cuDNN convolutions on a GPU use TF32 by default (10-bit mantissa): off unless asked, so that vectors
        # encoded on a GPU match those of a CPU build of the same index (eval/gpu_check_index.py measures both)
        self.allow_tf32 = bool(allow_tf32)
        self._model = None
        self._lock = threading.Lock()

    # --- model ----------------------------------------------------------------------------------------------
    @property
    def model(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    import torch

                    if self.device == "auto":
                        self.device = "cuda" if torch.cuda.is_available() else "cpu"
                    self._model = load_tower(self.path, self.tower_config).to(self.device)
        return self._model

    def warm_up(self) -> None:
        _ = self.model

    # --- preprocessing --------------------------------------------------------------------------------------
    def preprocess(self, image: "MedicalImage") -> np.ndarray:
        """One image → (S, S, 3) uint8 Y'CbCr, letterboxed, as ``preprocess.json`` says."""
        return letterbox_uint8(image.pixels, self.preprocess_config.size)

    def encode_arrays(self, arrs: np.ndarray) -> np.ndarray:
        """Preprocessed (n, S, S, 3) uint8 → raw (n, dim) float32 outputs (not yet normalised)."""
        import torch

        from ragmed.encoders.text import set_torch_threads

        set_torch_threads(self.threads)
        model = self.model
        with torch.inference_mode(), self._precision(torch):
            return model(to_tensor_batch(arrs, self.preprocess_config).to(self.device)).float().cpu().numpy()

    def _precision(self, torch):
        """cuDNN's TF32 switch for this call only (a context: torch's global flags are restored after it)."""
        import contextlib

        if not str(self.device).startswith("cuda"):
            return contextlib.nullcontext()
        c = torch.backends.cudnn
        return c.flags(enabled=c.enabled, benchmark=c.benchmark, deterministic=c.deterministic,
                       allow_tf32=self.allow_tf32)

    def _encode_image_batch(self, images: list["MedicalImage"]) -> np.ndarray:
        return self.encode_arrays(np.stack([self.preprocess(im) for im in images]))

    def encode_images(self, images: Sequence["MedicalImage"]) -> np.ndarray:
        """Batched; preprocessing of the next batch overlaps encoding of this one."""
        n = len(images)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        batches = [list(images[i:i + self.batch_size]) for i in range(0, n, self.batch_size)]
        return self._pipelined((lambda b=b: b) for b in batches)

    def encode_paths(self, paths: Iterable[str | Path], *, root: str | Path | None = None) -> np.ndarray:
        """Decode + preprocess in a thread pool, ahead of the network; for bulk work (benchmarks, fitting)."""
        from ragmed.io import load_image

        paths = list(paths)
        batches = [paths[i:i + self.batch_size] for i in range(0, len(paths), self.batch_size)]
        return self._pipelined(batches, loader=lambda p: load_image(p, root=root))

    def _pipelined(self, batches, loader=None) -> np.ndarray:
        batches = list(batches)
        out: list[np.ndarray] = []

        def prep(item):
            im = loader(item) if loader is not None else item
            return self.preprocess(im)

        with ThreadPoolExecutor(max_workers=self.preprocess_workers) as pool:
            def submit(b):
                items = b() if callable(b) else b
                return [pool.submit(prep, it) for it in items]

            pending = submit(batches[0])
            for i in range(len(batches)):
                arrs = np.stack([f.result() for f in pending])
                pending = submit(batches[i + 1]) if i + 1 < len(batches) else None
                out.append(self.encode_arrays(arrs))
        res = l2_normalise(np.concatenate(out, axis=0))
        if res.shape[1] != self.dim:
            raise ValueError(f"{self.id} returned dim {res.shape[1]}, expected {self.dim}")
        return res


def load_tower(path: Path, cfg: TowerConfig):
    """Build the network and load ``model.safetensors`` strictly (a mismatch is an EncoderError naming the file)."""
    from safetensors.torch import load_file

    from ragmed.encoders.tower import build_tower

    model = build_tower(cfg)
    try:
        state = load_file(str(path / "model.safetensors"))
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError) as e:
        raise EncoderError(f"weights do not fit the architecture in config.json: {str(e).splitlines()[0]}",
                           path=str(path / "model.safetensors"),
                           remedy="re-train, or restore the directory written by `ragmed encoder train`") from e
    model.eval()
    return model


def weights_digest(state: dict) -> str:
    """12 hex digits of SHA-256 over the tensors (names, dtypes, shapes, bytes, in name order): a fitted tower's id.
    Not the file's hash: safetensors writes its header's metadata in a per-process random order (a Rust HashMap), so
    the same weights saved twice can differ in bytes."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def save_model_dir(model, out: str | Path, *, tower: TowerConfig, preprocess: PreprocessConfig,
                   info: dict[str, Any] | None = None, id_prefix: str = DEFAULT_NAME) -> Path:
    """Write config.json + model.safetensors + preprocess.json atomically (temp dir, then rename)."""
    import os
    import shutil

    from safetensors.torch import save_file

    from ragmed.version import __version__

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "arch": tower.arch})
    os.chmod(tmp / "model.safetensors", 0o644)
    digest = weights_digest(state)
    config = {"name": DEFAULT_NAME, "id": f"{id_prefix}@{digest}", "space": tower.space, "dim": tower.embed_dim,
              "tower": tower.to_dict(), "ragmed_version": __version__, **(info or {})}
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    (tmp / "preprocess.json").write_text(json.dumps(preprocess.to_dict(), indent=2))
    if out.exists():
        for extra in out.iterdir():  # keep what else lives there (a README), replace only the model files
            if extra.is_file() and extra.name not in FILES and not (tmp / extra.name).exists():
                shutil.copy2(extra, tmp / extra.name)
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out
