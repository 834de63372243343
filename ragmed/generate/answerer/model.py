"""``ragmed-answerer``: a classic Med-VQA classifier that reads the image (image + question → one answer of a fixed
vocabulary), small enough to train and run on a CPU.

- image: the ragmed CNN tower (:func:`ragmed.encoders.tower.build_tower`, 112 px letterboxed Y'CbCr), initialised
  from a ragmed-default tower and fine-tuned end to end; its last feature map (256 × 4 × 4) is attended by the
  question, and its pooled embedding (384-d) is kept as a global feature;
- question: the frozen all-MiniLM-L6-v2 sentence vector (ragmed's ``minilm`` text encoder, 384-d);
- fusion: question-guided attention over the 16 positions, then [q, v_att, v_global, q⊙v_att, q⊙v_global] →
  MLP → logits over the answer vocabulary of the training part (yes/no + frequent open answers).

``image_branch=False`` builds the question-only variant (same head, no image): the baseline that shows what the
image adds. Weights directory: ``config.json`` (vocabulary, architecture, provenance) + ``model.safetensors``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ragmed.encoders.tower import PreprocessConfig, TowerConfig, build_tower, to_tensor_batch

CONFIG = "config.json"
# the image-level labels of the ``aux`` heads (organ HEAD/CHEST/ABD, modality X-ray/CT/MRI) as text: with ``agree``
# the head also reads cos(question, phrase) and its product with the head's probability for that label
LABEL_PHRASES = ["head brain skull", "chest lungs heart", "abdomen abdominal bowel liver kidney",
                 "x-ray radiograph film", "CT computed tomography scan", "MRI magnetic resonance FLAIR T2"]
WEIGHTS = "model.safetensors"


def build_model(vocab_size: int, tower: dict[str, Any] | None = None, *, hidden: int = 256, qdim: int = 384,
                dropout: float = 0.3, image_branch: bool = True, img_dim: int = 0, img_dropout: float = 0.0,
                align: bool = False, knn: int = 0, aux: tuple[int, ...] = (), agree: bool = False):
    """``img_dim`` > 0: the compact variant — the image enters only as its pooled embedding squeezed to ``img_dim``
    numbers (no attention over the map), fused with the question by concatenation and a product; during training
    each sample's image vector is dropped with probability ``img_dropout`` (fights memorising the few training
    images). ``align``: also the question–image agreement in the shared text space (the tower embeds images into
    all-MiniLM-L6-v2's space): the cosine of the two and a projection of their elementwise product. ``knn`` > 0
    (memory of that many training pairs, :meth:`set_memory`): adds β·log p_knn to the logits, where p_knn is the
    answer distribution of the training pairs weighted by softmax(a·question similarity + b·image similarity) — the
    answers given to similar questions about similar images (a, b, β learned; a pair's own image never counts).
    ``aux`` (with ``img_dim``; e.g. (3, 3)): the image enters only through the probabilities of image-level labels
    (one softmax head per entry: organ HEAD/CHEST/ABD and modality X-ray/CT/MRI in ragmed's recipe), trained as
    auxiliary targets beside the answer (:attr:`aux_logits` holds the last forward's logits) — a bottleneck of a few
    interpretable numbers instead of ``img_dim`` free ones. ``agree`` (with ``aux``): the head also reads the cosine of
    the question with each label's phrase (``LABEL_PHRASES``, MiniLM vectors kept in the buffer ``label_vecs``) and
    its product with the image's probability of that label ("is this an MRI?" × p(MRI))."""
    import torch
    from torch import nn

    tcfg = TowerConfig.from_dict(tower or {})

    class AnswerNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.image_branch = image_branch
            self.knn = knn
            if knn and image_branch:
                self.register_buffer("mem_q", torch.zeros(knn, qdim))
                self.register_buffer("mem_img", torch.zeros(1, tcfg.embed_dim))
                self.register_buffer("mem_img_idx", torch.zeros(knn, dtype=torch.long))
                self.register_buffer("mem_ans", torch.zeros(knn, dtype=torch.long))
                self.knn_scale = nn.Parameter(torch.tensor([10.0, 10.0, 1.0]))
            self.q = nn.Sequential(nn.Linear(qdim, hidden), nn.LayerNorm(hidden), nn.GELU())
            n_parts = 1
            self.aux_logits: list = []
            if image_branch and aux:
                self.tower = build_tower(tcfg)
                self.enc = nn.Sequential(nn.LayerNorm(tcfg.embed_dim), nn.Dropout(0.2), nn.Linear(tcfg.embed_dim, 64),
                                         nn.GELU())
                self.aux = nn.ModuleList(nn.Linear(64, k) for k in aux)
                z = sum(aux)
                self.qs = nn.Linear(hidden, z)
                if agree:
                    self.register_buffer("label_vecs", torch.zeros(z, qdim))
                self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden + 2 * z + (2 * z if agree else 0), hidden),
                                          nn.GELU(),
                                          nn.Dropout(dropout), nn.Linear(hidden, vocab_size))
                return
            if image_branch and img_dim:
                self.tower = build_tower(tcfg)
                self.small = nn.Sequential(nn.Linear(tcfg.embed_dim, img_dim), nn.LayerNorm(img_dim), nn.GELU())
                self.qs = nn.Linear(hidden, img_dim)
                extra = 0
                if align:
                    self.al = nn.Sequential(nn.Linear(tcfg.embed_dim, img_dim), nn.GELU())
                    extra = img_dim + 1
                self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden + 2 * img_dim + extra, hidden), nn.GELU(),
                                          nn.Dropout(dropout), nn.Linear(hidden, vocab_size))
                return
            if image_branch:
                self.tower = build_tower(tcfg)
                c = tcfg.widths[-1]
                self.key = nn.Conv2d(c, hidden, 1)
                self.val = nn.Conv2d(c, hidden, 1)
                self.glob = nn.Sequential(nn.Linear(tcfg.embed_dim, hidden), nn.LayerNorm(hidden), nn.GELU())
                n_parts = 5
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_parts * hidden, hidden), nn.GELU(),
                                      nn.Dropout(dropout), nn.Linear(hidden, vocab_size))

        def set_memory(self, q, img_emb, img_idx, ans):
            """The training pairs the kNN prior reads: question vectors, the images' embeddings, each pair's image
            index and answer index."""
            self.mem_q = nn.functional.normalize(q.float(), dim=-1)
            self.mem_img = nn.functional.normalize(img_emb.float(), dim=-1)
            self.mem_img_idx = img_idx.long()
            self.mem_ans = ans.long()

        def knn_logprior(self, qvec, emb, own=None):
            a, b, _ = self.knn_scale
            qs = nn.functional.normalize(qvec, dim=-1) @ self.mem_q.T  # (B, N)
            ims = (nn.functional.normalize(emb, dim=-1) @ self.mem_img.T)[:, self.mem_img_idx]  # (B, N)
            z = a * qs + b * ims
            if own is not None:
                z = z.masked_fill(self.mem_img_idx[None, :] == own[:, None], float("-inf"))
            w = torch.softmax(z, dim=-1)
            p = torch.zeros(w.shape[0], vocab_size, dtype=w.dtype, device=w.device).index_add_(1, self.mem_ans, w)
            return torch.log(p + 1e-3)

        def image_features(self, pixels):
            """(feature map, pooled embedding) of the tower: what the head reads (cacheable when frozen)."""
            f = self.tower.features(pixels)
            parts = [f.mean(dim=(2, 3)), f.amax(dim=(2, 3))]
            if tcfg.head_grid:
                parts.append(nn.functional.adaptive_avg_pool2d(f, tcfg.head_grid).flatten(1))
            return f, self.tower.head(torch.cat(parts, dim=1))

        def forward(self, qvec, pixels=None, feats=None, own=None):
            out = self._forward(qvec, pixels, feats)
            if self.knn and self.image_branch:
                emb = feats[1] if feats is not None else self._emb
                out = out + self.knn_scale[2] * self.knn_logprior(qvec, emb, own)
            return out

        def _forward(self, qvec, pixels=None, feats=None):
            q = self.q(qvec)
            if not self.image_branch:
                return self.head(q)
            f, emb = feats if feats is not None else self.image_features(pixels)
            self._emb = emb
            if aux:
                e = self.enc(emb)
                self.aux_logits = [h(e) for h in self.aux]
                v = torch.cat([lg.softmax(-1) for lg in self.aux_logits], dim=1)
                if self.training and img_dropout > 0:
                    v = v * (torch.rand(v.shape[0], 1, device=v.device) >= img_dropout).to(v.dtype)
                parts = [q, v, self.qs(q) * v]
                if agree:
                    sim = nn.functional.normalize(qvec, dim=-1) @ nn.functional.normalize(self.label_vecs, dim=-1).T * 5.0
                    parts += [sim, sim * v]
                return self.head(torch.cat(parts, dim=1))
            if img_dim:
                v = self.small(emb)
                if self.training and img_dropout > 0:
                    v = v * (torch.rand(v.shape[0], 1, device=v.device) >= img_dropout).to(v.dtype)
                parts = [q, v, self.qs(q) * v]
                if align:
                    en = nn.functional.normalize(emb, dim=-1)
                    qn = nn.functional.normalize(qvec, dim=-1)
                    a = self.al(en * qn)
                    c = (en * qn).sum(-1, keepdim=True) * 10.0
                    if self.training and img_dropout > 0:
                        keep = (torch.rand(a.shape[0], 1, device=a.device) >= img_dropout).to(a.dtype)
                        a, c = a * keep, c * keep
                    parts += [a, c]
                return self.head(torch.cat(parts, dim=1))
            g = self.glob(emb)
            k = self.key(f).flatten(2)  # (b, h, n)
            v = self.val(f).flatten(2)
            att = torch.softmax((q.unsqueeze(1) @ k).squeeze(1) / hidden ** 0.5, dim=-1)  # (b, n)
            va = (v * att.unsqueeze(1)).sum(-1)
            return self.head(torch.cat([q, va, g, q * va, q * g], dim=1))

    return AnswerNet()


class Answerer:
    """A loaded answerer: :meth:`probabilities` for (question vectors, letterboxed images)."""

    def __init__(self, path: str | Path):
        import torch
        from safetensors.torch import load_file

        self.path = Path(path)
        self.config = json.loads((self.path / CONFIG).read_text())
        self.vocab: list[str] = list(self.config["vocab"])
        self.index = {a: i for i, a in enumerate(self.vocab)}
        self.preprocess = PreprocessConfig.from_dict(self.config.get("preprocess", {}))
        a = self.config["arch"]
        self.model = build_model(len(self.vocab), self.config.get("tower"), hidden=a["hidden"], qdim=a["qdim"],
                                 image_branch=a.get("image_branch", True), img_dim=a.get("img_dim", 0),
                                 align=a.get("align", False), knn=a.get("knn", 0), aux=tuple(a.get("aux", ())),
                                 agree=a.get("agree", False))
        sd = load_file(str(self.path / WEIGHTS))
        if "mem_img" in sd:  # the kNN memory's sizes come from the file
            self.model.set_memory(sd["mem_q"], sd["mem_img"], sd["mem_img_idx"], sd["mem_ans"])
        self.model.load_state_dict(sd)
        self.model.eval()
        self._torch = torch
        self.image_level = ImageLevel.load(self.path) if self.image_branch else None

    @property
    def image_branch(self) -> bool:
        return bool(self.config["arch"].get("image_branch", True))

    def image_heads(self, arrs: np.ndarray) -> list[np.ndarray]:
        """The image-level auxiliary heads' probabilities (``arch.aux``, e.g. organ and modality) for (n, S, S, 3)
        letterboxed images; [] for a model without them."""
        torch = self._torch
        if not self.config["arch"].get("aux"):
            return []
        with torch.inference_mode():
            q = torch.zeros(len(arrs), int(self.config["arch"]["qdim"]))
            self.model(q, to_tensor_batch(arrs, self.preprocess))
            return [lg.softmax(-1).numpy() for lg in self.model.aux_logits]

    def embeddings(self, arrs: np.ndarray) -> np.ndarray:
        """The tower's pooled embeddings (n, embed_dim) of (n, S, S, 3) letterboxed images: what the image-level
        heads (:class:`ImageLevel`) read."""
        torch = self._torch
        with torch.inference_mode():
            return self.model.image_features(to_tensor_batch(arrs, self.preprocess))[1].numpy()

    def letterbox(self, pixels: np.ndarray) -> np.ndarray:
        from ragmed.encoders.tower import letterbox_uint8

        return letterbox_uint8(pixels, self.preprocess.size)

    def probabilities(self, qvecs: np.ndarray, arrs: np.ndarray | None = None) -> np.ndarray:
        """(n, 384) question vectors + (n, S, S, 3) uint8 letterboxed images → (n, vocab) probabilities."""
        torch = self._torch
        with torch.inference_mode():
            q = torch.from_numpy(np.asarray(qvecs, dtype=np.float32))
            px = to_tensor_batch(arrs, self.preprocess) if self.image_branch else None
            return torch.softmax(self.model(q, px), dim=-1).numpy()


def save(model, path: str | Path, config: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(p / WEIGHTS))
    (p / CONFIG).write_text(json.dumps(config, indent=1))
    return p


def choose(probs: np.ndarray, vocab_index: dict[str, int], choices: list[str]) -> tuple[str | None, float]:
    """The most probable of ``choices`` (normalised answers) that the vocabulary knows, and its probability
    renormalised over those choices; (None, 0) when the vocabulary knows none of them."""
    known = [(c, vocab_index[c]) for c in choices if c in vocab_index]
    if not known:
        return None, 0.0
    p = np.array([probs[i] for _, i in known], dtype=np.float64)
    j = int(np.argmax(p))
    return known[j][0], float(p[j] / max(p.sum(), 1e-12))


IMAGE_LEVEL_FILE = "image_level.json"


class ImageLevel:
    """Open questions about the whole image ("what organ / which modality / which plane is this?") answered from
    image-level heads (``image_level.json`` beside the weights, fitted on the training part by
    eval/answers_common.py's ``fit_image_level``): a linear question-type classifier over the question vector, linear
    heads over the tower embedding (organ, modality, optionally plane), and per (type, label) the expected token F1
    of each vocabulary answer against the training part's answers (F1 or recall, ``criterion``). Plain numpy at run
    time."""

    def __init__(self, params: dict[str, Any]):
        qt = params["qtype"]
        self.types = list(qt["classes"])
        self.qw, self.qb = np.asarray(qt["coef"], np.float64), np.asarray(qt["intercept"], np.float64)
        self.heads = {h: (np.asarray(d["coef"], np.float64), np.asarray(d["intercept"], np.float64), list(d["labels"]))
                      for h, d in params["heads"].items()}
        self.head_of = dict(params["head_of_type"])
        self.candidates = list(params["candidates"])
        self.set_criterion(params.get("criterion", "f1"), params["tables"])

    def set_criterion(self, criterion: str, tables: dict[str, Any]) -> None:
        """Choose answers by the expected token ``f1`` or ``recall`` table (both fitted)."""
        self.criterion = criterion
        self.table = {t: np.asarray(v, np.float64) for t, v in tables[criterion].items()}

    @classmethod
    def load(cls, path: str | Path) -> "ImageLevel | None":
        p = Path(path) / IMAGE_LEVEL_FILE
        return cls(json.loads(p.read_text())) if p.is_file() else None

    @staticmethod
    def _softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def question_types(self, qvecs: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(most probable type, its probability) per question vector."""
        p = self._softmax(np.asarray(qvecs, np.float64) @ self.qw.T + self.qb)
        j = p.argmax(-1)
        return [self.types[i] for i in j], p[np.arange(len(j)), j]

    def head_probabilities(self, head: str, embs: np.ndarray) -> np.ndarray:
        w, b, _ = self.heads[head]
        return self._softmax(np.asarray(embs, np.float64) @ w.T + b)

    def answers(self, qvecs: np.ndarray, embs: np.ndarray) -> list[tuple[str, float, str] | None]:
        """Per (question vector, tower embedding): (answer, confidence, question type) for an image-level question,
        None for any other. The answer maximises the expected F1 under the head's label probabilities; confidence =
        P(type) × the head's top label probability."""
        types, pt = self.question_types(qvecs)
        out: list[tuple[str, float, str] | None] = []
        for i, t in enumerate(types):
            if t not in self.head_of:
                out.append(None)
                continue
            ph = self.head_probabilities(self.head_of[t], embs[i:i + 1])[0]
            j = int(np.argmax(ph @ self.table[t]))
            out.append((self.candidates[j], float(pt[i] * ph.max()), t))
        return out


__all__ = ["ImageLevel", "IMAGE_LEVEL_FILE", "Answerer", "build_model", "save", "choose", "CONFIG", "WEIGHTS", "LABEL_PHRASES"]
