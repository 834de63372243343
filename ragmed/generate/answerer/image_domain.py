"""Is a query image like the images ragmed-answerer was trained on? (issue 12, rare findings)

The classifier's reading of an image is only evidence for images like its training images (VQA-RAD radiology at
full resolution). For an image far from all of them (e.g. a 28-pixel MedMNIST chest X-ray, whose nearest training
image lies further than any training image lies from its own nearest neighbour), its closed answer is a guess made
outside its domain, so the closed answer follows the image-matched evidence instead (the vote; "insufficient
evidence" when no retrieved case speaks to the finding).

The reference is ``image_domain.safetensors``, written by ``eval/fit_evidence_pooling.py --image-domain``:

- ``embeddings``: the unit-length embeddings of the answerer's own training images (the frozen tower's pooled
  embedding, :meth:`AnswerNet.image_features`), float16;
- metadata ``max_distance``: the largest leave-one-out nearest-neighbour cosine distance among those training
  images (every training image is within it of another one): the threshold, set on the training images only;
- metadata ``tower_sha256``: a fingerprint of the tower's weights. When the answerer's weights carry a different
  tower (retrained), the reference does not describe them and the check is off (:func:`load_domain` returns None).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DOMAIN_FILE = Path(__file__).with_name("image_domain.safetensors")


def tower_fingerprint(answerer) -> str | None:
    """sha256 over the tower's weights (sorted names, float32 bytes) of a loaded :class:`Answerer`; None without an
    image branch."""
    tower = getattr(answerer.model, "tower", None)
    if tower is None or not answerer.image_branch:
        return None
    h = hashlib.sha256()
    for k, v in sorted(tower.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def embed(answerer, pixels_list) -> np.ndarray:
    """Unit-length tower embeddings (n, d) of images given as pixel arrays (``MedicalImage.pixels``): the
    answerer's own :meth:`~ragmed.generate.answerer.model.Answerer.embeddings`, 32 images at a time."""
    out = [answerer.embeddings(np.stack([answerer.letterbox(p) for p in pixels_list[i:i + 32]]))
           for i in range(0, len(pixels_list), 32)]
    e = np.concatenate(out).astype(np.float32)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def nearest_distance(emb: np.ndarray, ref: np.ndarray, *, leave_one_out: bool = False) -> np.ndarray:
    """Cosine distance of each row of ``emb`` to its nearest row of ``ref`` (both unit length)."""
    s = emb @ ref.T
    if leave_one_out:
        np.fill_diagonal(s, -np.inf)
    return 1.0 - s.max(axis=1)


@dataclass
class ImageDomain:
    embeddings: np.ndarray
    max_distance: float

    def distance(self, answerer, pixels) -> float:
        return float(nearest_distance(embed(answerer, [pixels]), self.embeddings)[0])


def save_domain(path: Path, embeddings: np.ndarray, tower_sha256: str, note: str) -> float:
    """Write the reference; returns its threshold (largest leave-one-out nearest-neighbour distance)."""
    from safetensors.numpy import save_file

    e = np.asarray(embeddings, dtype=np.float32)
    thr = float(nearest_distance(e, e, leave_one_out=True).max())
    save_file({"embeddings": e.astype(np.float16)}, str(path),
              metadata={"max_distance": f"{thr:.6f}", "tower_sha256": tower_sha256, "n_images": str(len(e)),
                        "note": note})
    return thr


def load_domain(answerer, path: Path = DOMAIN_FILE) -> ImageDomain | None:
    """The reference for this answerer, or None (no file, no image branch, or a different tower)."""
    from safetensors import safe_open

    if not Path(path).is_file():
        return None
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        emb = f.get_tensor("embeddings").astype(np.float32)
    if meta.get("tower_sha256") != tower_fingerprint(answerer):
        return None
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return ImageDomain(emb, float(meta["max_distance"]))


__all__ = ["ImageDomain", "load_domain", "save_domain", "embed", "nearest_distance", "tower_fingerprint", "DOMAIN_FILE"]
