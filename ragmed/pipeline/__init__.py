"""The pipeline: a query flow over components built once from one typed config.

``Pipeline.from_yaml(path_or_name, index=DIR)`` (or ``Pipeline.for_index(DIR)``) builds it; ``.ask(image, question)
-> Answer``; ``.retrieve(image, question) -> Retrieval``; ``.answer(retrieval, question)``; ``.ask_batch(items)``.

- :mod:`ragmed.pipeline.components`: :class:`Components`, the one place that turns configuration into components
  (each injectable: ``Pipeline(cfg, index=DIR, components=Components(cfg, DIR, generator=g))`` or
  ``Pipeline.from_components(...)``); heavy weights load on first use or in ``warm_up()``.
- :mod:`ragmed.pipeline.query`: the query flow, stage by stage (route, retrieve, select, knowledge, generate).
- :mod:`ragmed.pipeline.build`: the build flow (index, BM25, calibration, router fit; published when complete).
- :mod:`ragmed.pipeline.fusion` / :mod:`ragmed.pipeline.hybrid`: rank fusion, BM25 and score calibration.

``ask`` is safe to call from several threads: components are shared and built once.
"""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

from ragmed.config import PipelineConfig, load_pipeline
from ragmed.corpus.questions import read_questions
from ragmed.text.questions import guess_task, validate_question, validate_task  # guess_task re-exported
from ragmed.errors import RagmedError
from ragmed.pipeline.components import DEFAULT_INDEX, Components
from ragmed.pipeline.fusion import fuse
from ragmed.pipeline.query import QueryFlow, Retrieval
from ragmed.types import Answer, Evidence, KnowledgeEvidence


class Pipeline:
    """A thin facade over :class:`QueryFlow`: the same calls as before the split, stage methods added."""

    def __init__(self, config: PipelineConfig | None = None, index: str | Path | None = None, *,
                 components: Components | None = None):
        if components is None:
            components = Components.from_config(config, index)
        elif config is not None and components.config is not config:
            raise ValueError("give the config either to Pipeline or to its Components, not both")
        self.components = components
        self.flow = QueryFlow(components)

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, index: str | Path | None = None, **components: Any
                  ) -> "Pipeline":
        """The pipeline defined by a YAML (a path or a name under ``pipelines/``); ``components`` (``generator=…``,
        ``text_encoder=…``) replace the configured ones."""
        return cls(components=Components.from_config(load_pipeline(path), index, **components))

    @classmethod
    def for_index(cls, index: str | Path, pipeline: str | Path | None = None, **components: Any) -> "Pipeline":
        """The pipeline named, else the one recorded in the index's manifest (the one that built it)."""
        if pipeline is not None:
            return cls.from_yaml(pipeline, index=index, **components)
        from ragmed.index import read_manifest

        rec = read_manifest(index).get("pipeline", {})
        cfg = PipelineConfig.from_dict(rec.get("config", {}), source=rec.get("source"))
        return cls(components=Components.from_config(cfg, index, **components))

    @classmethod
    def from_components(cls, config: PipelineConfig | None = None, index: str | Path | None = None, **components: Any
                        ) -> "Pipeline":
        """A pipeline whose named components are given (the rest built from ``config`` as usual)."""
        return cls(components=Components.from_config(config, index, **components))

    # --- components (read-only views) -----------------------------------------------------------------------------
    config = property(lambda self: self.components.config)
    index_path = property(lambda self: self.components.index_path)
    store = property(lambda self: self.components.store)
    text_encoder = property(lambda self: self.components.text_encoder)
    image_encoder = property(lambda self: self.components.image_encoder)
    selector = property(lambda self: self.components.selector)
    generator = property(lambda self: self.components.generator)
    knowledge = property(lambda self: self.components.knowledge)
    calibrator = property(lambda self: self.components.calibrator)
    bm25 = property(lambda self: self.components.bm25)
    router = property(lambda self: self.components.router)

    def warm_up(self) -> "Pipeline":
        """Load everything now (the HTTP service does this at start-up)."""
        self.components.warm_up()
        return self

    # --- the stages, one by one -----------------------------------------------------------------------------------
    def route(self, image) -> "Any":
        """The router's decision for one image (:class:`ragmed.domains.Route`); None without configured domains.
        Raises :class:`ragmed.errors.DomainError` for an image that fits no configured domain."""
        return self.flow.route(image)

    def retrieve(self, image=None, question: str | None = None, *, k: int | None = None,
                 exclude_hashes: set[str] | None = None, exclude_case_ids: set[str] | None = None,
                 domains: list[str] | None = None) -> Retrieval:
        """Candidates from image→image, image→report, question→report and BM25 search of the routed domain's index
        (every domain's when the router is unsure), fused by ``retrieval.fusion`` (rrf | score). ``domains``
        overrides the router."""
        return self.flow.retrieve(image, question, k=k, exclude_hashes=exclude_hashes,
                                  exclude_case_ids=exclude_case_ids, domains=domains)

    def select(self, candidates: list[Evidence], *, selector=None):
        """The selector's :class:`~ragmed.types.Selection` of ``candidates`` (e.g. ``retrieve(...).candidates``)."""
        return self.flow.select(candidates, selector=selector)

    def generate(self, question: str, evidence: list[Evidence] | None = None, *, image=None,
                 knowledge: list[KnowledgeEvidence] | bool = False, task: str | None = None,
                 domain: str | None = None, generator=None):
        """The generator alone on the evidence given (``None`` / ``[]``: no evidence) and the image given (a path,
        a MedicalImage or None; need not be the one retrieval used). ``knowledge=True`` links the question and
        evidence to the knowledge graph first. Returns :class:`ragmed.types.Generation`; no insufficient-evidence
        rule is applied (that is :meth:`answer`'s)."""
        evidence = list(evidence or [])
        if knowledge is True:
            knowledge = self.flow.add_knowledge(question, evidence)
        return self.flow.generate(question, evidence, image=image, knowledge=knowledge or [], domain=domain,
                                  task=validate_task(task) or guess_task(question), generator=generator)

    # --- answering ------------------------------------------------------------------------------------------------
    def ask(self, image=None, question: str = "", *, k: int | None = None, exclude_hashes: set[str] | None = None,
            task: str | None = None, domains: list[str] | None = None) -> Answer:
        """Route, retrieve, select, add knowledge, generate: one cited :class:`Answer`. Thread-safe. An empty
        question is refused (:class:`ragmed.text.questions.QuestionError`) unless ``task="report"``."""
        t0 = time.perf_counter()
        task = validate_task(task)
        question = validate_question(question, task=task)
        task = task or guess_task(question)
        gen = self.generator
        if task != "closed" and hasattr(gen, "warm_up_async") and not getattr(gen, "_ready", True):
            gen.warm_up_async()  # a model generator loads its weights while retrieval runs (cold start)
        if not self.components.is_loaded("knowledge") and self.config.knowledge.path:  # and so does the graph
            threading.Thread(target=self._prefetch_knowledge, name="load knowledge graph", daemon=True).start()
        # issue S: closed answers rest on the cases that match the image, not on the ones whose text matches the
        # question (those are the few reports that mention the finding)
        image_votes = (task == "closed" and image is not None and self.image_encoder is not None
                       and "image" in self.store.encoders)
        r = self.retrieve(image, None if image_votes else question, k=k, exclude_hashes=exclude_hashes,
                          domains=domains)
        a = self.answer(r, question, task=task)
        a.timings["total"] = time.perf_counter() - t0
        return a

    def _prefetch_knowledge(self) -> None:
        try:
            self.components.get("knowledge")
        except Exception:  # noqa: BLE001 - the answer step loads it again and reports the error there
            pass

    def answer(self, r: Retrieval, question: str = "", *, task: str | None = None, selector=None,
               generator=None) -> Answer:
        """Answer from an existing :class:`Retrieval` (the evaluation harness reuses one retrieval with several
        selectors / generators)."""
        return self.flow.answer(r, question, task=validate_task(task) or guess_task(question), selector=selector,
                                generator=generator)

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


def build_from_config(corpus, out, cfg, **kw):
    """The build flow (:func:`ragmed.pipeline.build.build_from_config`): index a corpus with a pipeline config."""
    from ragmed.pipeline.build import build_from_config as build

    return build(corpus, out, cfg, **kw)


def build_from_config_ray(corpus, out, cfg, **kw):
    """The build flow on the Ray engine (:func:`ragmed.pipeline.build.build_from_config_ray`)."""
    from ragmed.pipeline.build import build_from_config_ray as build

    return build(corpus, out, cfg, **kw)


__all__ = ["Pipeline", "Components", "QueryFlow", "Answer", "Retrieval", "fuse", "guess_task", "read_questions",
           "build_from_config", "build_from_config_ray", "DEFAULT_INDEX"]
