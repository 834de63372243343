"""Components: the one place that turns a pipeline configuration into the objects a query uses.

``Components.from_config(cfg, index)`` names what a pipeline needs — the index store, the text and image encoders,
the selector, the generator, the knowledge graph, the domain router, the BM25 channel and the score calibrator — and
builds each on first use (or all at once in :meth:`Components.warm_up`). Any of them can be passed in instead::

    Components.from_config(cfg, "indexes/demo", text_encoder=my_encoder, generator=my_generator)

so tests and embedding applications construct a pipeline from components without touching private attributes.
Building is thread-safe: each slot has its own lock (the knowledge graph loads in the background while retrieval
runs). Every parameter is read from the typed :class:`ragmed.config.PipelineConfig`; path parameters are resolved
here, relative to the repository or the YAML's directory.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ragmed.config import PIPELINES_DIR, PipelineConfig
from ragmed.errors import IndexStoreError
from ragmed.settings import DEFAULT_INDEX

SLOTS = ("store", "text_encoder", "image_encoder", "selector", "generator", "knowledge", "router", "bm25",
         "calibrator")


class Components:
    """The pipeline's components, each built once from the config unless given (see the module docstring)."""

    def __init__(self, config: PipelineConfig | None = None, index: str | Path | None = None, **given: Any):
        unknown = sorted(set(given) - set(SLOTS))
        if unknown:
            raise TypeError(f"unknown component(s) {unknown}; available: {', '.join(SLOTS)}")
        if config is not None and not isinstance(config, PipelineConfig):
            hint = ""
            if isinstance(config, (str, Path)):
                hint = (f"; for an index directory use Pipeline.for_index({str(config)!r}), for a pipeline YAML "
                        f"Pipeline.from_yaml({str(config)!r}, index=DIR)")
            raise TypeError(f"config must be a PipelineConfig, not {type(config).__name__}{hint}")
        self.config = config or PipelineConfig()
        self.index_path = Path(index) if index is not None else DEFAULT_INDEX
        self._values: dict[str, Any] = dict(given)
        self._locks = {name: threading.RLock() for name in SLOTS}

    @classmethod
    def from_config(cls, config: PipelineConfig | None, index: str | Path | None = None, **given: Any
                    ) -> "Components":
        return cls(config, index, **given)

    # --- access ---------------------------------------------------------------------------------------------------
    def get(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            pass
        if name not in self._locks:
            raise KeyError(f"unknown component {name!r}; available: {', '.join(SLOTS)}")
        with self._locks[name]:
            if name not in self._values:
                self._values[name] = getattr(self, f"_build_{name}")()
            return self._values[name]

    def loaded(self, name: str) -> Any:
        """The component if it is already built (or given), else None; never builds."""
        return self._values.get(name)

    def is_loaded(self, name: str) -> bool:
        return name in self._values

    store = property(lambda self: self.get("store"))
    text_encoder = property(lambda self: self.get("text_encoder"))
    image_encoder = property(lambda self: self.get("image_encoder"))
    selector = property(lambda self: self.get("selector"))
    generator = property(lambda self: self.get("generator"))
    knowledge = property(lambda self: self.get("knowledge"))
    router = property(lambda self: self.get("router"))
    bm25 = property(lambda self: self.get("bm25"))
    calibrator = property(lambda self: self.get("calibrator"))

    def warm_up(self) -> "Components":
        """Build every component now and load the heavy weights (the HTTP service does this at start-up)."""
        for name in ("store", "text_encoder", "image_encoder", "selector", "knowledge", "router"):
            self.get(name)
        for enc in (self.text_encoder, self.image_encoder):
            if enc is not None and hasattr(enc, "warm_up"):
                enc.warm_up()
        if "bm25" in self.config.retrieval.channels:
            self.get("bm25")
        self.get("calibrator")
        self.generator.warm_up()
        return self

    # --- builders (config -> component) ---------------------------------------------------------------------------
    def _build_store(self):
        from ragmed.index import open_index

        return open_index(self.index_path)

    def _build_text_encoder(self):
        from ragmed.encoders import create_encoder

        spec = self.config.encoders.text
        return create_encoder(spec.name, role="text", **spec.params)

    def _build_image_encoder(self):
        spec = self.config.encoders.image
        if spec is None:
            return None
        from ragmed.encoders import create_encoder

        params = dict(spec.params)
        try:
            rec = self.store.encoders.get("image") or {}
        except IndexStoreError:  # no index yet (building one): the configured encoder
            rec = {}
        if rec.get("model_dir"):  # a tower fitted to this index's corpus at build time
            params["path"] = str(self.store.version_dir / rec["model_dir"])
        return create_encoder(spec.name, role="image", **params)

    def _build_selector(self):
        from ragmed.select import create_selector

        params = dict(self.config.select.params)
        if self.config.select.name in ("rule", "ltt"):
            if isinstance(params.get("calibration"), str) and params["calibration"].endswith(".json"):
                params["calibration"] = self.config.resolve_path(params["calibration"])
            params.setdefault("search_dirs", [self.index_path, PIPELINES_DIR])
        return create_selector(self.config.select.name, **params)

    def _shares_text_encoder(self, generator: str) -> bool:
        """Whether the generator can use the pipeline's text encoder (its registry entry's ``shares_text_encoder``:
        ``"any"``, or the one encoder name, with default parameters, whose vector space it was trained on)."""
        from ragmed.generate import GENERATORS

        if generator not in GENERATORS:
            return False
        want = GENERATORS.info(generator).get("shares_text_encoder")
        spec = self.config.encoders.text
        return want == "any" or (bool(want) and spec.name == want and not spec.params)

    def _build_generator(self):
        from ragmed.generate import create_generator

        params = dict(self.config.generator.params)
        if self._shares_text_encoder(self.config.generator.name):
            params.setdefault("text_encoder", self.text_encoder)
        for key in ("path", "model_path", "prompts_dir", "adapter"):
            if isinstance(params.get(key), str):
                params[key] = self.config.resolve_path(params[key])
        return create_generator(self.config.generator.name, **params)

    def _build_knowledge(self):
        path = self.config.resolve_path(self.config.knowledge.path)
        if not path:
            return None
        from ragmed.knowledge import load_graph

        return load_graph(path)

    def _build_bm25(self):
        """The BM25 channel (``bm25/`` in the index version, else built in memory on first use)."""
        from ragmed.index.bm25 import BM25Channel

        return BM25Channel.load(self.store.version_dir) or BM25Channel.build(self.store)

    def _build_calibrator(self):
        """The index's retrieval calibration (``retrieval_calibration.json``: channel quantiles and evidence floors;
        computed once and kept in memory for an index built without it)."""
        from ragmed.index.calibrate import Calibrator, calibrate

        cal = Calibrator.load(self.store.version_dir)
        if cal is None:
            space = self.store.encoders.get("image", {}).get("space")
            cal = Calibrator(calibrate(self.store, text_encoder=self.text_encoder, image_encoder_space=space,
                                       bm25=self.bm25))
        return cal

    def _build_router(self):
        if not self.config.domains:
            return None
        from ragmed.domains import build_router

        return build_router(self.config, image_encoder=self.image_encoder, text_encoder=self.text_encoder,
                            version_dir=self.store.version_dir)
