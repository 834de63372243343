"""The pipeline: wires io → encoders → index → (knowledge) → select → generate from one typed config.

``Pipeline.from_yaml(path_or_name, index=DIR)`` builds it; ``.ask(image, question) -> Answer``;
``.retrieve(image, question) -> Retrieval``; ``.ask_batch(items)``. Models load once (lazily, or in
``warm_up()``) and are shared; ``ask`` is safe to call from several threads.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragmed.config import PipelineConfig, load_pipeline
from ragmed.errors import ConfigError, RagmedError
from ragmed.types import Answer, Evidence, KnowledgeEvidence, Selection

DEFAULT_INDEX = Path("indexes/default")


@dataclass
class Retrieval:
    """Fused candidates (best first) plus how they were found."""

    candidates: list[Evidence]
    domain: str | None = None
    domain_confidence: float | None = None
    domains_searched: list[str] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)  # channel -> best raw score
    insufficient: bool = False
    reason: str = ""
    image: Any = None  # the decoded MedicalImage
    timings: dict[str, float] = field(default_factory=dict)


class Pipeline:
    def __init__(self, config: PipelineConfig | None = None, index: str | Path | None = None):
        self.config = config or PipelineConfig()
        self.index_path = Path(index) if index is not None else DEFAULT_INDEX
        self._lock = threading.RLock()
        self._store = None
        self._text_encoder = None
        self._image_encoder = None
        self._generator = None
        self._selector = None
        self._kg = None
        self._kg_loaded = False
        self._router = None
        self._bm25 = None

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, index: str | Path | None = None) -> "Pipeline":
        return cls(load_pipeline(path), index=index)

    @classmethod
    def for_index(cls, index: str | Path, pipeline: str | Path | None = None) -> "Pipeline":
        """The pipeline named, else the one recorded in the index's manifest (the one that built it)."""
        if pipeline is not None:
            return cls.from_yaml(pipeline, index=index)
        from ragmed.index.store import resolve_version_dir

        import json

        manifest = json.loads((resolve_version_dir(index) / "manifest.json").read_text())
        rec = manifest.get("pipeline", {})
        cfg = PipelineConfig.from_dict(rec.get("config", {}), source=rec.get("source"))
        return cls(cfg, index=index)

    # --- components, loaded once ----------------------------------------------------------------------------
    @property
    def store(self):
        if self._store is None:
            with self._lock:
                if self._store is None:
                    from ragmed.index import open_index

                    self._store = open_index(self.index_path)
        return self._store

    @property
    def text_encoder(self):
        if self._text_encoder is None:
            with self._lock:
                if self._text_encoder is None:
                    from ragmed.encoders import create_encoder

                    spec = self.config.encoders.text
                    self._text_encoder = create_encoder(spec.name, role="text", **spec.params)
        return self._text_encoder

    @property
    def image_encoder(self):
        if self._image_encoder is None and self.config.encoders.image is not None:
            with self._lock:
                if self._image_encoder is None:
                    from ragmed.encoders import create_encoder

                    spec = self.config.encoders.image
                    self._image_encoder = create_encoder(spec.name, role="image", **spec.params)
        return self._image_encoder

    @property
    def selector(self):
        if self._selector is None:
            from ragmed.select import create_selector

            self._selector = create_selector(self.config.select.name, **self.config.select.params)
        return self._selector

    @property
    def generator(self):
        if self._generator is None:
            with self._lock:
                if self._generator is None:
                    from ragmed.generate import create_generator

                    params = dict(self.config.generator.params)
                    if self.config.generator.name == "extractive":
                        params.setdefault("text_encoder", self.text_encoder)
                    for key in ("path", "model_path", "prompts_dir"):
                        if isinstance(params.get(key), str):
                            params[key] = self.config.resolve_path(params[key])
                    self._generator = create_generator(self.config.generator.name, **params)
        return self._generator

    @property
    def knowledge(self):
        if not self._kg_loaded:
            with self._lock:
                if not self._kg_loaded:
                    path = self.config.resolve_path(self.config.knowledge.path)
                    if path:
                        from ragmed.knowledge import load_graph

                        self._kg = load_graph(path)
                    self._kg_loaded = True
        return self._kg

    def warm_up(self) -> "Pipeline":
        """Load everything now (the HTTP service does this at start-up)."""
        _ = self.store, self.text_encoder, self.image_encoder, self.selector, self.knowledge
        for enc in (self.text_encoder, self.image_encoder):
            if enc is not None and hasattr(enc, "warm_up"):
                enc.warm_up()
        self.generator.warm_up()
        return self

    # --- retrieval -----------------------------------------------------------------------------------------
    def _load(self, image):
        from ragmed.io import MedicalImage, load_image

        if image is None or isinstance(image, MedicalImage):
            return image
        return load_image(image)

    def retrieve(self, image=None, question: str | None = None, *, k: int | None = None,
                 exclude_hashes: set[str] | None = None, exclude_case_ids: set[str] | None = None) -> Retrieval:
        """Candidates from image→image, image→report and question→report search, fused by reciprocal rank."""
        timings: dict[str, float] = {}
        t = time.perf_counter()
        img = self._load(image)
        timings["load_image"] = time.perf_counter() - t
        if img is None and not question:
            raise ConfigError("give an image, a question or both")
        store = self.store
        rc = self.config.retrieval
        k = k or rc.top_k
        exclude_case_ids = set(exclude_case_ids or ())
        for h in exclude_hashes or ():
            exclude_case_ids |= store.case_ids_with_hash(h)
        fetch = k + len(exclude_case_ids)
        channels: dict[str, list] = {}
        t = time.perf_counter()
        if img is not None and self.image_encoder is not None and "image" in store.encoders:
            store.check_encoder("image", self.image_encoder)
            iv = self.image_encoder.encode_images([img])
            timings["encode_image"] = time.perf_counter() - t
            if "image-image" in rc.channels:
                channels["image-image"] = store.search("image", iv, fetch, channel="image-image")[0]
            enc_space = getattr(self.image_encoder, "space", None)
            if ("image-report" in rc.channels and enc_space is not None
                    and enc_space == store.encoders.get("text", {}).get("space")):
                channels["image-report"] = store.search("text", iv, fetch, channel="image-report")[0]
        if question and "question-report" in rc.channels:
            t = time.perf_counter()
            store.check_encoder("text", self.text_encoder)
            qv = self.text_encoder.encode_texts([question])
            timings["encode_question"] = time.perf_counter() - t
            channels["question-report"] = store.search("text", qv, fetch, channel="question-report")[0]
        t = time.perf_counter()
        fused = fuse(channels, exclude_case_ids, rrf_k=rc.rrf_k, weights=rc.weights, k=k)
        records = store.cases([e.case_id for e in fused])
        for e in fused:
            r = records.get(e.case_id)
            if r is not None:
                e.text, e.domain, e.metadata = r.text, r.domain, r.metadata
                e.excerpt = r.text[:300]
                if r.images:
                    e.image = e.image or r.images[0]["source"]
                    e.modality = r.images[0].get("modality")
        timings["search"] = time.perf_counter() - t
        best = {ch: hits[0].score for ch, hits in channels.items() if hits}
        insufficient, reason = self._insufficient(best)
        return Retrieval(candidates=fused, domain=None, domain_confidence=None, domains_searched=store.domains,
                         best=best, insufficient=insufficient, reason=reason, image=img, timings=timings)

    def _insufficient(self, best: dict[str, float]) -> tuple[bool, str]:
        cal = self.store.manifest.get("calibration", {})
        checked = {ch: (s, cal[ch]["floor"]) for ch, s in best.items() if ch in cal}
        if not best:
            return True, "no channel returned any evidence"
        if checked and all(s < floor for s, floor in checked.values()):
            detail = ", ".join(f"{ch} best {s:.3f} < floor {f:.3f}" for ch, (s, f) in checked.items())
            return True, f"best evidence scores under the index's calibrated floor ({detail})"
        return False, ""

    # --- answering -----------------------------------------------------------------------------------------
    def ask(self, image=None, question: str = "", *, k: int | None = None, exclude_hashes: set[str] | None = None,
            task: str | None = None) -> Answer:
        t0 = time.perf_counter()
        r = self.retrieve(image, question, k=k, exclude_hashes=exclude_hashes)
        timings = dict(r.timings)
        t = time.perf_counter()
        sel: Selection = self.selector.select(r.candidates)
        timings["select"] = time.perf_counter() - t
        for i, e in enumerate(sel.kept, start=1):
            e.ref = f"[{i}]"
        t = time.perf_counter()
        knowledge = self._knowledge(question, sel.kept)
        timings["knowledge"] = time.perf_counter() - t
        t = time.perf_counter()
        task = task or guess_task(question)
        if r.insufficient or not sel.kept:
            gen_text = ("Insufficient evidence: " + (r.reason or "nothing relevant was retrieved") +
                        ". ragmed does not answer from evidence this weak.")
            if sel.kept:
                gen_text += " Closest cases, for reference only: " + ", ".join(
                    f"{e.case_id} {e.ref}" for e in sel.kept[:3]) + "."
            from ragmed.generate.citations import cited_refs

            citations, flags, model, insufficient = cited_refs(gen_text), ["insufficient-evidence"], "none", True
        else:
            g = self.generator.generate(question, sel.kept, knowledge, image=r.image, domain=r.domain, task=task)
            gen_text, citations, flags, model, insufficient = g.text, g.citations, g.flags, g.model, g.insufficient
        timings["generate"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        img = r.image
        image_info = {} if img is None else {"source": img.source, "modality": img.modality,
                                             "body_part": img.body_part, "view": img.view,
                                             "content_hash": img.content_hash, "shape": list(img.shape)}
        models = {"text_encoder": self.text_encoder.id, "generator": model}
        if self.image_encoder is not None:
            models["image_encoder"] = self.image_encoder.id
        if self._kg is not None:
            models["knowledge"] = getattr(self._kg, "id", "kg")
        return Answer(question=question, text=gen_text, evidence=sel.kept, knowledge=knowledge, citations=citations,
                      insufficient_evidence=insufficient, domain=r.domain, domain_confidence=r.domain_confidence,
                      selection=sel, image=image_info, models=models, flags=flags, timings=timings)

    def _knowledge(self, question: str, kept: list[Evidence]) -> list[KnowledgeEvidence]:
        kg = self.knowledge
        if kg is None or self.config.knowledge.max_concepts == 0:
            return []
        from ragmed.knowledge import knowledge_evidence

        items = knowledge_evidence(kg, question, [e.text for e in kept], max_concepts=self.config.knowledge.max_concepts)
        for i, k in enumerate(items, start=1):
            k.ref = f"[K{i}]"
        return items

    def ask_batch(self, items: list[tuple[Any, str]], **kw) -> list[Answer | RagmedError]:
        """Answer many (image, question) pairs; a bad item yields its RagmedError in place, the rest go on."""
        out: list[Answer | RagmedError] = []
        for image, question in items:
            try:
                out.append(self.ask(image, question, **kw))
            except RagmedError as e:
                out.append(e)
        return out


def fuse(channels: dict[str, list], exclude: set[str], *, rrf_k: int = 60, weights: dict[str, float] | None = None,
         k: int = 10) -> list[Evidence]:
    """Reciprocal-rank fusion (Cormack et al. 2009): score = Σ_channel w / (rrf_k + rank). Duplicates merge; each
    channel's raw score and rank stay on the evidence."""
    weights = weights or {}
    merged: dict[str, Evidence] = {}
    for ch, hits in channels.items():
        rank = 0
        for h in hits:
            if h.case_id in exclude:
                continue
            rank += 1
            e = merged.get(h.case_id)
            if e is None:
                e = merged[h.case_id] = Evidence(case_id=h.case_id, score=0.0, domain=h.domain, image=h.image)
            if ch not in e.channels:
                e.channels[ch] = round(float(h.score), 6)
                e.ranks[ch] = rank
                e.score += weights.get(ch, 1.0) / (rrf_k + rank)
            if h.image and not e.image:
                e.image = h.image
    ranked = sorted(merged.values(), key=lambda e: -e.score)[:k]
    for e in ranked:
        e.score = round(e.score, 6)
    return ranked


_CLOSED_START = ("is ", "are ", "was ", "were ", "does ", "do ", "did ", "can ", "could ", "has ", "have ", "will ",
                 "should ", "would ", "may ")


def guess_task(question: str) -> str:
    q = (question or "").strip().lower()
    if not q:
        return "report"
    return "closed" if q.startswith(_CLOSED_START) or " or " in q and q.endswith("?") else "open"


__all__ = ["Pipeline", "Answer", "Retrieval", "fuse", "guess_task"]
