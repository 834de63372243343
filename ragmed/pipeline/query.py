"""The query flow: route → retrieve → fuse → select → knowledge → generate → :class:`Answer`.

Each stage is a method of :class:`QueryFlow` and can be called alone: :meth:`QueryFlow.retrieve` (candidates),
:meth:`QueryFlow.select` (which of them reach the generator), :meth:`QueryFlow.add_knowledge` and
:meth:`QueryFlow.generate` (an answer from *given* evidence — or none — and a given image — or another one), so an
evaluation can answer without retrieval or with the image replaced. :meth:`QueryFlow.answer` chains the last three
and applies the insufficient-evidence rule. Components come from :class:`ragmed.pipeline.components.Components`.
"""
from __future__ import annotations

import copy
import numbers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragmed.domains.ood import check_image
from ragmed.errors import ConfigError
from ragmed.generate.vote import abstain_below, own_case_first
from ragmed.pipeline.fusion import fuse
from ragmed.types import Answer, Evidence, KnowledgeEvidence, Selection

REFUSAL = "Insufficient evidence: {reason}. ragmed does not answer from evidence this weak."


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


def load_image(image):
    """The query's image as a MedicalImage: a file path or DICOM series directory, the file's bytes (decoded from
    a private temporary file, shown as ``upload``), an already decoded :class:`~ragmed.io.MedicalImage`, or None."""
    from ragmed.io import MedicalImage, load_image as _load

    if image is None or isinstance(image, MedicalImage):
        return image
    if isinstance(image, (bytes, bytearray, memoryview)):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="ragmed-image-") as work:
            path = Path(work) / "upload"
            path.write_bytes(bytes(image))
            return _load(path, root=work)
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(f"image must be a file path, a DICOM series directory, the file's bytes, a "
                        f"ragmed.io.MedicalImage or None, not {type(image).__name__}"
                        + (" (save the array as a PNG, or wrap it in a MedicalImage)"
                           if type(image).__name__ == "ndarray" else ""))
    return _load(image)


class QueryFlow:
    def __init__(self, components):
        self.c = components

    @property
    def config(self):
        return self.c.config

    # --- route + retrieve -----------------------------------------------------------------------------------------
    def route(self, image):
        img = load_image(image)
        if img is not None:
            check_image(img)  # every pipeline refuses what is not a medical image (issue S)
        router = self.c.router
        return None if router is None or img is None else router.route(img)

    def retrieve(self, image=None, question: str | None = None, *, k: int | None = None,
                 exclude_hashes: set[str] | None = None, exclude_case_ids: set[str] | None = None,
                 domains: list[str] | None = None) -> Retrieval:
        timings: dict[str, float] = {}
        t = time.perf_counter()
        img = load_image(image)
        if img is not None:
            check_image(img)  # every pipeline refuses what is not a medical image (issue S)
        timings["load_image"] = time.perf_counter() - t
        if img is None and not question:
            raise ConfigError("give an image, a question or both")
        c, store, rc = self.c, self.c.store, self.config.retrieval
        if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1):
            raise ConfigError(f"k must be a whole number of cases, at least 1; got {k!r}")
        k = int(k) if k is not None else rc.top_k
        exclude_case_ids = set(exclude_case_ids or ())
        for h in exclude_hashes or ():
            exclude_case_ids |= store.case_ids_with_hash(h)
        fetch = k + len(exclude_case_ids)
        iv = None
        if img is not None and c.image_encoder is not None and "image" in store.encoders:
            t = time.perf_counter()
            store.check_encoder("image", c.image_encoder)
            iv = c.image_encoder.encode_images([img])
            timings["encode_image"] = time.perf_counter() - t
        route, searched = self._route(img, iv, domains, timings)
        cal = c.calibrator
        channels = self._search(img, iv, question, fetch, searched, cal, timings)
        t = time.perf_counter()
        fused = fuse(channels, exclude_case_ids, method=rc.fusion, rrf_k=rc.rrf_k, weights=rc.weights, k=k,
                     calibrate=cal)
        if img is not None:  # the query's own case is kept as evidence (issue S; evaluation excludes it by hash)
            fused = own_case_first(fused, store.case_ids_with_hash(img.content_hash) - exclude_case_ids, channels)
        self._attach_records(fused)
        timings["fuse"] = time.perf_counter() - t
        best = {ch: max(h.score for h in hits) for ch, hits in channels.items() if hits}
        insufficient, reason = self.insufficient(best)
        return Retrieval(candidates=fused, domain=route.domain if route else None,
                         domain_confidence=route.confidence if route else None, domains_searched=searched,
                         best=best, insufficient=insufficient, reason=reason, image=img, timings=timings, route=route)

    def _route(self, img, iv, domains, timings):
        store = self.c.store
        route = None
        searched = list(store.domains)
        if domains is not None:
            unknown = [d for d in domains if d not in store.domains]
            if unknown:
                raise ConfigError(f"unknown domain(s) {unknown}; this index has {store.domains}")
            searched = list(domains)
        elif img is not None and self.c.router is not None:
            t = time.perf_counter()
            route = self.c.router.route(img, vector=None if iv is None else iv[0])
            timings["route"] = time.perf_counter() - t
            if route.domain is not None and route.domain in store.domains:
                searched = [route.domain]
            elif route.domain is not None:
                route.reason += f"; the index has no {route.domain!r} sub-index: searching every domain"
        return route, searched

    def _search(self, img, iv, question, fetch, searched, cal, timings) -> dict[str, list]:
        c, store, rc = self.c, self.c.store, self.config.retrieval
        channels: dict[str, list] = {}
        t = time.perf_counter()
        if iv is not None:
            if "image-image" in rc.channels:
                channels["image-image"] = self._search_domains("image", iv, fetch, searched, "image-image", cal)
            enc_space = getattr(c.image_encoder, "space", None)
            if ("image-report" in rc.channels and enc_space is not None
                    and enc_space == store.encoders.get("text", {}).get("space")):
                channels["image-report"] = self._search_domains("text", iv, fetch, searched, "image-report", cal)
        if question and "question-report" in rc.channels and "text" in store.encoders:
            tq = time.perf_counter()
            store.check_encoder("text", c.text_encoder)
            qv = c.text_encoder.encode_texts([question])
            timings["encode_question"] = time.perf_counter() - tq
            channels["question-report"] = self._search_domains("text", qv, fetch, searched, "question-report", cal)
        if question and "bm25" in rc.channels and c.bm25 is not None:
            hits = c.bm25.search(question, fetch, domains=searched)
            channels["bm25"] = sorted(hits, key=lambda h: -cal(h.domain, "bm25", h.score))
        timings["search"] = time.perf_counter() - t
        return channels

    def _search_domains(self, kind: str, q, k: int, domains: list[str], channel: str, cal) -> list:
        """Search each domain's sub-index separately, then merge by calibrated score (raw scores of different
        domains and channels are not comparable)."""
        hits = []
        for d in domains:
            hits.extend(self.c.store.search(kind, q, k, domains=[d], channel=channel)[0])
        if len(domains) > 1:
            hits.sort(key=lambda h: -cal(h.domain, channel, h.score))
        return hits[: k * max(1, min(len(domains), 3))]

    def _attach_records(self, fused: list[Evidence]) -> None:
        records = self.c.store.cases([e.case_id for e in fused])
        for e in fused:
            r = records.get(e.case_id)
            if r is not None:
                e.text, e.domain, e.metadata = r.text, r.domain, r.metadata
                e.excerpt = r.text[:300]
                if r.images:
                    e.image = e.image or r.images[0]["source"]
                    e.modality = r.images[0].get("modality")

    def insufficient(self, best: dict[str, float]) -> tuple[bool, str]:
        """The evidence floor: insufficient when every calibrated channel's best score is under its floor."""
        floors = self.c.calibrator.floors(self.c.store)
        checked = {ch: (s, floors[ch]["floor"]) for ch, s in best.items() if ch in floors}
        if not best:
            return True, "no channel returned any evidence"
        if checked and all(s < floor for s, floor in checked.values()):
            detail = ", ".join(f"{ch} best {s:.3f} < floor {f:.3f}" for ch, (s, f) in checked.items())
            return True, f"best evidence scores under the index's calibrated floor ({detail})"
        return False, ""

    # --- select, knowledge, generate ------------------------------------------------------------------------------
    def select(self, candidates: list[Evidence], *, selector=None) -> Selection:
        """The selector's choice among ``candidates`` (copies: the caller's list is left as it was), numbered
        ``[1]``, ``[2]`` … in order."""
        sel: Selection = (selector or self.c.selector).select([copy.copy(e) for e in candidates])
        for i, e in enumerate(sel.kept, start=1):
            e.ref = f"[{i}]"
        return sel

    def add_knowledge(self, question: str, kept: list[Evidence]) -> list[KnowledgeEvidence]:
        kg = self.c.knowledge
        if kg is None or self.config.knowledge.max_concepts == 0:
            return []
        from ragmed.knowledge import knowledge_evidence

        items = knowledge_evidence(kg, question, [e.text for e in kept],
                                   max_concepts=self.config.knowledge.max_concepts)
        for i, k in enumerate(items, start=1):
            k.ref = f"[K{i}]"
        return items

    def generate(self, question: str, evidence: list[Evidence] | None = None, *, image=None,
                 knowledge: list[KnowledgeEvidence] | None = None, domain: str | None = None, task: str = "open",
                 generator=None):
        """The generator's answer (:class:`ragmed.types.Generation`) from the evidence given (none: ``[]``) and the
        image given (a path or a MedicalImage; another image than the one retrieval used is fine)."""
        return (generator or self.c.generator).generate(question, list(evidence or []), list(knowledge or []),
                                                        image=load_image(image), domain=domain, task=task)

    def answer(self, r: Retrieval, question: str = "", *, task: str, selector=None, generator=None) -> Answer:
        """Select, add knowledge and generate from an existing :class:`Retrieval`; refuse when the evidence is
        insufficient."""
        timings = dict(r.timings)
        t = time.perf_counter()
        sel = self.select(r.candidates, selector=selector)
        timings["select"] = time.perf_counter() - t
        t = time.perf_counter()
        knowledge = self.add_knowledge(question, sel.kept)
        timings["knowledge"] = time.perf_counter() - t
        t = time.perf_counter()
        if r.insufficient or not sel.kept:
            gen_text = REFUSAL.format(reason=r.reason or "nothing relevant was retrieved")
            if sel.kept:
                gen_text += " Closest cases, for reference only: " + ", ".join(
                    f"{e.case_id} {e.ref}" for e in sel.kept[:3]) + "."
            from ragmed.generate.citations import cited_refs

            citations, flags, model, insufficient = cited_refs(gen_text), ["insufficient-evidence"], "none", True
        else:
            g = self.generate(question, sel.kept, knowledge=knowledge, image=r.image, domain=r.domain, task=task,
                              generator=generator)
            gen = generator or self.c.generator
            if hasattr(gen, "abstain"):  # a backend with its own calibrated confidence (ragmed-answerer)
                g = gen.abstain(g, question, sel.kept, task=task)
            else:
                g = abstain_below(g, question, sel.kept, task=task, text_encoder=self.c.text_encoder)  # issue S
            gen_text, citations, flags, model, insufficient = g.text, g.citations, g.flags, g.model, g.insufficient
        timings["generate"] = time.perf_counter() - t
        timings["total"] = sum(v for kk, v in timings.items() if kk != "total")
        return Answer(question=question, text=gen_text, evidence=sel.kept, knowledge=knowledge, citations=citations,
                      insufficient_evidence=insufficient, domain=r.domain, domain_confidence=r.domain_confidence,
                      selection=sel, image=self.image_info(r), models=self.models(model), flags=flags,
                      timings=timings)

    def image_info(self, r: Retrieval) -> dict[str, Any]:
        img = r.image
        info = {} if img is None else {"source": img.source, "modality": img.modality, "body_part": img.body_part,
                                       "view": img.view, "content_hash": img.content_hash, "shape": list(img.shape)}
        if getattr(r, "route", None) is not None:
            info["route"] = r.route.to_dict()
        return info

    def models(self, generator_model: str) -> dict[str, str]:
        models = {"text_encoder": self.c.text_encoder.id, "generator": generator_model}
        if self.c.image_encoder is not None:
            models["image_encoder"] = self.c.image_encoder.id
        kg = self.c.loaded("knowledge")
        if kg is not None:
            models["knowledge"] = getattr(kg, "id", "kg")
        return models
