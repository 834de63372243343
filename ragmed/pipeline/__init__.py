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
from ragmed.domains.ood import check_image
from ragmed.generate.vote import abstain_below, own_case_first
from ragmed.errors import ConfigError, IndexStoreError, RagmedError
from ragmed.text.questions import guess_task, validate_question  # guess_task re-exported: ragmed.pipeline.guess_task
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
    route: Any = None  # the router's decision (ragmed.domains.Route), None when not routed


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
        self._kg_lock = threading.Lock()  # its own lock: the graph loads in the background while retrieval runs
        self._router = None
        self._bm25 = None
        self._bm25_loaded = False
        self._calibrator = None

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
                    params = dict(spec.params)
                    try:
                        rec = self.store.encoders.get("image") or {}
                    except IndexStoreError:  # no index yet (building one): the configured encoder
                        rec = {}
                    if rec.get("model_dir"):  # a tower fitted to this index's corpus at build time
                        params["path"] = str(self.store.version_dir / rec["model_dir"])
                    self._image_encoder = create_encoder(spec.name, role="image", **params)
        return self._image_encoder

    @property
    def selector(self):
        if self._selector is None:
            from ragmed.select import create_selector

            params = dict(self.config.select.params)
            if self.config.select.name in ("rule", "ltt"):
                from ragmed.config import PIPELINES_DIR

                if isinstance(params.get("calibration"), str) and params["calibration"].endswith(".json"):
                    params["calibration"] = self.config.resolve_path(params["calibration"])
                params.setdefault("search_dirs", [self.index_path, PIPELINES_DIR])
            self._selector = create_selector(self.config.select.name, **params)
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
            with self._kg_lock:
                if not self._kg_loaded:
                    path = self.config.resolve_path(self.config.knowledge.path)
                    if path:
                        from ragmed.knowledge import load_graph

                        self._kg = load_graph(path)
                    self._kg_loaded = True
        return self._kg

    @property
    def calibrator(self):
        """Per-domain, per-channel score calibration (``retrieval_calibration.json``; computed once and kept in
        memory for an index built without it)."""
        if self._calibrator is None:
            with self._lock:
                if self._calibrator is None:
                    from ragmed.pipeline.hybrid import Calibrator, calibrate_channels

                    cal = Calibrator.load(self.store.version_dir)
                    if cal is None:
                        space = self.store.encoders.get("image", {}).get("space")
                        cal = Calibrator(calibrate_channels(self.store, text_encoder=self.text_encoder,
                                                            image_encoder_space=space, bm25=self.bm25))
                    self._calibrator = cal
        return self._calibrator

    @property
    def bm25(self):
        """The BM25 channel (``bm25/`` in the index version, else built in memory on first use)."""
        if not self._bm25_loaded:
            with self._lock:
                if not self._bm25_loaded:
                    from ragmed.pipeline.hybrid import BM25Channel

                    self._bm25 = BM25Channel.load(self.store.version_dir) or BM25Channel.build(self.store)
                    self._bm25_loaded = True
        return self._bm25

    @property
    def router(self):
        if self._router is None and self.config.domains:
            with self._lock:
                if self._router is None:
                    from ragmed.domains import build_router

                    self._router = build_router(self.config, image_encoder=self.image_encoder,
                                                text_encoder=self.text_encoder, version_dir=self.store.version_dir)
        return self._router

    def warm_up(self) -> "Pipeline":
        """Load everything now (the HTTP service does this at start-up)."""
        _ = self.store, self.text_encoder, self.image_encoder, self.selector, self.knowledge, self.router
        for enc in (self.text_encoder, self.image_encoder):
            if enc is not None and hasattr(enc, "warm_up"):
                enc.warm_up()
        if "bm25" in self.config.retrieval.channels:
            _ = self.bm25
        _ = self.calibrator
        self.generator.warm_up()
        return self

    # --- retrieval -----------------------------------------------------------------------------------------
    def _load(self, image):
        from ragmed.io import MedicalImage, load_image

        if image is None or isinstance(image, MedicalImage):
            return image
        return load_image(image)

    def route(self, image) -> "Any":
        """The router's decision for one image (:class:`ragmed.domains.Route`); None without configured domains.
        Raises :class:`ragmed.errors.DomainError` for an image that fits no configured domain."""
        img = self._load(image)
        if img is not None:
            check_image(img)  # every pipeline refuses what is not a medical image (issue S)
        return None if self.router is None or img is None else self.router.route(img)

    def retrieve(self, image=None, question: str | None = None, *, k: int | None = None,
                 exclude_hashes: set[str] | None = None, exclude_case_ids: set[str] | None = None,
                 domains: list[str] | None = None) -> Retrieval:
        """Candidates from image→image, image→report, question→report and BM25 search of the routed domain's index
        (every domain's when the router is unsure), fused by ``retrieval.fusion`` (rrf | score). ``domains``
        overrides the router."""
        timings: dict[str, float] = {}
        t = time.perf_counter()
        img = self._load(image)
        if img is not None:
            check_image(img)  # every pipeline refuses what is not a medical image (issue S)
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
        iv = None
        if img is not None and self.image_encoder is not None and "image" in store.encoders:
            t = time.perf_counter()
            store.check_encoder("image", self.image_encoder)
            iv = self.image_encoder.encode_images([img])
            timings["encode_image"] = time.perf_counter() - t
        # route
        route = None
        searched = list(store.domains)
        if domains is not None:
            unknown = [d for d in domains if d not in store.domains]
            if unknown:
                raise ConfigError(f"unknown domain(s) {unknown}; this index has {store.domains}")
            searched = list(domains)
        elif img is not None and self.router is not None:
            t = time.perf_counter()
            route = self.router.route(img, vector=None if iv is None else iv[0])
            timings["route"] = time.perf_counter() - t
            if route.domain is not None and route.domain in store.domains:
                searched = [route.domain]
            elif route.domain is not None:
                route.reason += f"; the index has no {route.domain!r} sub-index: searching every domain"
        cal = self.calibrator
        channels: dict[str, list] = {}
        t = time.perf_counter()
        if iv is not None:
            if "image-image" in rc.channels:
                channels["image-image"] = self._search_domains("image", iv, fetch, searched, "image-image", cal)
            enc_space = getattr(self.image_encoder, "space", None)
            if ("image-report" in rc.channels and enc_space is not None
                    and enc_space == store.encoders.get("text", {}).get("space")):
                channels["image-report"] = self._search_domains("text", iv, fetch, searched, "image-report", cal)
        if question and "question-report" in rc.channels and "text" in store.encoders:
            tq = time.perf_counter()
            store.check_encoder("text", self.text_encoder)
            qv = self.text_encoder.encode_texts([question])
            timings["encode_question"] = time.perf_counter() - tq
            channels["question-report"] = self._search_domains("text", qv, fetch, searched, "question-report", cal)
        if question and "bm25" in rc.channels and self.bm25 is not None:
            hits = self.bm25.search(question, fetch, domains=searched)
            channels["bm25"] = sorted(hits, key=lambda h: -cal(h.domain, "bm25", h.score))
        timings["search"] = time.perf_counter() - t
        t = time.perf_counter()
        fused = fuse(channels, exclude_case_ids, method=rc.fusion, rrf_k=rc.rrf_k, weights=rc.weights, k=k,
                     calibrate=cal)
        if img is not None:  # the query's own case is kept as evidence (issue S; evaluation excludes it by hash)
            fused = own_case_first(fused, store.case_ids_with_hash(img.content_hash) - exclude_case_ids, channels)
        records = store.cases([e.case_id for e in fused])
        for e in fused:
            r = records.get(e.case_id)
            if r is not None:
                e.text, e.domain, e.metadata = r.text, r.domain, r.metadata
                e.excerpt = r.text[:300]
                if r.images:
                    e.image = e.image or r.images[0]["source"]
                    e.modality = r.images[0].get("modality")
        timings["fuse"] = time.perf_counter() - t
        best = {ch: max(h.score for h in hits) for ch, hits in channels.items() if hits}
        insufficient, reason = self._insufficient(best)
        r = Retrieval(candidates=fused, domain=route.domain if route else None,
                      domain_confidence=route.confidence if route else None, domains_searched=searched,
                      best=best, insufficient=insufficient, reason=reason, image=img, timings=timings, route=route)
        return r

    def _search_domains(self, kind: str, q, k: int, domains: list[str], channel: str, cal) -> list:
        """Search each domain's sub-index separately, then merge by calibrated score (raw scores of different
        domains and channels are not comparable)."""
        hits = []
        for d in domains:
            hits.extend(self.store.search(kind, q, k, domains=[d], channel=channel)[0])
        if len(domains) > 1:
            hits.sort(key=lambda h: -cal(h.domain, channel, h.score))
        return hits[: k * max(1, min(len(domains), 3))]

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
            task: str | None = None, domains: list[str] | None = None) -> Answer:
        """Route, retrieve, select, add knowledge, generate: one cited :class:`Answer`. Thread-safe. An empty
        question is refused (:class:`ragmed.text.questions.QuestionError`) unless ``task="report"``."""
        t0 = time.perf_counter()
        question = validate_question(question, task=task)
        task = task or guess_task(question)
        gen = self.generator
        if task != "closed" and hasattr(gen, "warm_up_async") and not getattr(gen, "_ready", True):
            gen.warm_up_async()  # a model generator loads its weights while retrieval runs (cold start)
        if not self._kg_loaded and self.config.knowledge.path:  # and so does the knowledge graph
            threading.Thread(target=self._prefetch_knowledge, name="load knowledge graph", daemon=True).start()
        image_votes = (task == "closed" and image is not None and self.image_encoder is not None
                       and "image" in self.store.encoders)  # issue S: closed answers rest on the image-matched cases
        r = self.retrieve(image, None if image_votes else question, k=k, exclude_hashes=exclude_hashes, domains=domains)
        a = self.answer(r, question, task=task)
        a.timings["total"] = time.perf_counter() - t0
        return a

    def _prefetch_knowledge(self) -> None:
        try:
            _ = self.knowledge
        except Exception:  # noqa: BLE001 - the answer step loads it again and reports the error there
            pass

    def answer(self, r: Retrieval, question: str = "", *, task: str | None = None, selector=None,
               generator=None) -> Answer:
        """Answer from an existing :class:`Retrieval` (the evaluation harness reuses one retrieval with several
        selectors / generators)."""
        import copy

        timings = dict(r.timings)
        t = time.perf_counter()
        sel: Selection = (selector or self.selector).select([copy.copy(e) for e in r.candidates])
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
            g = (generator or self.generator).generate(question, sel.kept, knowledge, image=r.image, domain=r.domain,
                                                       task=task)
            g = abstain_below(g, question, sel.kept, task=task, text_encoder=self.text_encoder)  # issue S
            gen_text, citations, flags, model, insufficient = g.text, g.citations, g.flags, g.model, g.insufficient
        timings["generate"] = time.perf_counter() - t
        timings["total"] = sum(v for kk, v in timings.items() if kk != "total")
        img = r.image
        image_info = {} if img is None else {"source": img.source, "modality": img.modality,
                                             "body_part": img.body_part, "view": img.view,
                                             "content_hash": img.content_hash, "shape": list(img.shape)}
        route = getattr(r, "route", None)
        if route is not None:
            image_info["route"] = route.to_dict()
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

    def ask_batch(self, items: list[tuple[Any, str]], *, workers: int = 1, **kw) -> list[Answer | RagmedError]:
        """Answer many (image, question) pairs, in order; a bad item yields its RagmedError in place, the rest go
        on. ``workers`` > 1 answers them from a thread pool (the models are shared, loaded once)."""
        def one(item):
            image, question = item
            try:
                return self.ask(image, question, **kw)
            except RagmedError as e:
                return e

        items = list(items)
        if workers <= 1 or len(items) < 2:
            return [one(it) for it in items]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, items))

    def ask_manifest(self, manifest: str | Path, *, workers: int = 1, **kw) -> list[dict[str, Any]]:
        """Answer every row of a CSV / JSONL manifest with columns ``image`` (path, relative to the manifest) and
        ``question`` (optional ``id``). Returns one dict per row: ``{"id", "answer"}`` (Answer.to_dict()) or
        ``{"id", "error"}``."""
        rows = read_questions(manifest)
        base = Path(manifest).parent
        items = [((base / r["image"]) if r.get("image") else None, r.get("question", "")) for r in rows]
        out = []
        for r, res in zip(rows, self.ask_batch(items, workers=workers, **kw)):
            rid = r.get("id") or r.get("qid") or ""
            out.append({"id": rid, "error": str(res)} if isinstance(res, RagmedError)
                       else {"id": rid, "answer": res.to_dict()})
        return out


def read_questions(manifest: str | Path) -> list[dict[str, str]]:
    """Rows of a question manifest (CSV with a header, or JSONL): ``image``, ``question``, optional ``id``."""
    import csv
    import json

    p = Path(manifest)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read the question manifest: {e}", path=str(p)) from e
    if p.suffix in (".jsonl", ".ndjson"):
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise ConfigError(f"invalid JSONL: {e}", path=str(p)) from e
    else:
        rows = list(csv.DictReader(text.splitlines()))
    if rows and not any("question" in r or "image" in r for r in rows[:1]):
        raise ConfigError("a question manifest needs an `image` and/or `question` column", path=str(p))
    return [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in rows]


def fuse(channels: dict[str, list], exclude: set[str], *, method: str = "rrf", rrf_k: int = 60,
         weights: dict[str, float] | None = None, k: int = 10, calibrate=None) -> list[Evidence]:
    """Fuse per-channel hit lists (each best first) into one list of evidence, duplicates merged; each channel's raw
    score and rank stay on the evidence (``channels`` / ``ranks``).

    ``rrf``: reciprocal-rank fusion (Cormack et al. 2009), score = Σ_channel w / (rrf_k + rank).
    ``score``: calibrated score fusion, score = Σ_channel w · cal(score) / Σ_channel w over the channels that ran
    (a channel that did not return the case contributes 0).
    Either way ``similarity`` is that calibrated fused score (``calibrate(domain, channel, raw) -> [0, 1]``; the raw
    score clipped to [0, 1] without a calibrator)."""
    if method not in ("rrf", "score"):
        raise ConfigError(f"retrieval.fusion must be 'rrf' or 'score', not {method!r}")
    weights = weights or {}
    cal = calibrate or (lambda d, ch, s: float(min(1.0, max(0.0, s))))
    merged: dict[str, Evidence] = {}
    rrf: dict[str, float] = {}
    csum: dict[str, float] = {}
    active = [ch for ch, hits in channels.items()]
    wsum = sum(weights.get(ch, 1.0) for ch in active) or 1.0
    for ch, hits in channels.items():
        w = weights.get(ch, 1.0)
        rank = 0
        for h in hits:
            if h.case_id in exclude:
                continue
            e = merged.get(h.case_id)
            if e is not None and ch in e.channels:
                continue
            rank += 1
            if e is None:
                e = merged[h.case_id] = Evidence(case_id=h.case_id, score=0.0, domain=h.domain, image=h.image)
                rrf[h.case_id] = csum[h.case_id] = 0.0
            e.channels[ch] = round(float(h.score), 6)
            e.ranks[ch] = rank
            rrf[h.case_id] += w / (rrf_k + rank)
            csum[h.case_id] += w * cal(h.domain, ch, float(h.score))
            if h.image and not e.image:
                e.image = h.image
    for cid, e in merged.items():
        e.similarity = round(csum[cid] / wsum, 6)
        e.score = round(rrf[cid] if method == "rrf" else e.similarity, 6)
    return sorted(merged.values(), key=lambda e: (-e.score, -(e.similarity or 0.0)))[:k]


__all__ = ["Pipeline", "Answer", "Retrieval", "fuse", "guess_task", "read_questions"]
