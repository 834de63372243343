"""ragmed's question-answering HTTP service, for clinical decision-support apps.

    export RAGMED_API_KEYS=$(openssl rand -hex 24)
    ragmed serve api --index indexes/demo --port 8080
    curl -H "Authorization: Bearer $RAGMED_API_KEYS" -F image=@scan.dcm -F question="Is there a pleural effusion?" \\
         http://127.0.0.1:8080/v1/ask

Routes (every one is in ``/openapi.json``):

- ``GET /health``: liveness (``{"status": "ok", "pipeline", "index_version", "answer_schema"}``).
- ``GET /readyz``: readiness: 200 once the models are loaded and the live index version is the one being served,
  503 (with the reason) otherwise.
- ``GET /metrics``: Prometheus metrics (requests, latency histograms, errors by type, queue depth, evidence counts).
- ``POST /v1/ask``: a multipart form with ``question``, an optional ``image`` file (DICOM, PNG or JPEG) or a PACS
  reference (``study`` [+ ``series`` [+ ``instance``]] UIDs, fetched over WADO-RS from ``--dicomweb``), optional
  ``k`` and ``format`` (``json``: ``Answer.to_dict()``; ``fhir``: a FHIR R4B DiagnosticReport;
  ``fhir-guidance``: a GuidanceResponse holding it).
- ``POST /v1/retrieve``: the same form; the retrieval alone.
- ``GET /v1/cases/{case_id}/images/{image_id}/thumbnail``: a PNG thumbnail of an evidence image, rendered here.
- ``GET /viewer``: the evidence viewer (a static page; it calls the API with the key the user enters).
- ``/cds-services``: CDS Hooks 2.0 (see :mod:`ragmed.serve.cds`).
- ``GET /docs``: Swagger UI from local files (no CDN), behind the API key like ``/openapi.json``.

Hardening: API keys are required unless the operator passes ``--no-auth`` on a loopback address; keys compare in
constant time over their SHA-256. Work runs on a fixed pool of ``workers`` threads behind a bounded queue: when
``workers + queue`` requests are admitted, more get 503 with ``Retry-After``. Bodies are limited while they stream
in (413) and must arrive within the read timeouts (408); request headers within the same chunk timeout
(else the connection is closed). Images are checked against ``max_image_pixels`` from their
header before any pixel is decoded (413). Every response carries ``X-Request-ID``; logs are JSON lines with the
request id and no identifiers. Evidence names a case id and an opaque image id, never the corpus file name, unless
``--allow-names``. A rebuilt index (a new ``current`` version) is loaded in the background and swapped in; a request
that fails because its version disappeared is retried on the new one.

Errors are always ``{"error": {"type", "message"}}``: 400 bad input, 401 authentication, 404 / 405 routing,
408 slow body, 412 (CDS) missing data, 413 too large, 503 overloaded or not ready, 500 with a generic message
(details only in the server log).
"""
from __future__ import annotations

import ipaddress
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ragmed.errors import ConfigError, RagmedError
from ragmed.api import MAX_QUESTION_CHARS, QuestionError  # noqa: F401
from ragmed.serve.context import (CLIENT_ERRORS, ServiceContext, check_declared_size, declared_size,  # noqa: F401
                                  image_id, study_reference, validate_question)

log = logging.getLogger("ragmed.serve.api")

LOOPBACK_NAMES = {"localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServiceSettings:
    api_keys: tuple[str, ...] = ()
    no_auth: bool = False  # explicit: serve without keys (refused unless host is loopback)
    host: str = "127.0.0.1"
    max_upload_mb: float = 64.0
    max_image_pixels: int = 4096 * 4096 * 3  # samples of the one frame decoded (~200 MB as float32)
    max_question_chars: int = MAX_QUESTION_CHARS
    workers: int = 2
    queue: int = 16
    retry_after_s: int = 2
    chunk_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    allow_names: bool = False  # evidence may carry the corpus file name
    corpus_root: str | None = None  # where the indexed images are, for thumbnails
    dicomweb_url: str | None = None  # the PACS for study references
    max_study_instances: int = 200
    cds: Any = None  # ragmed.serve.cds.CdsSettings
    image_id_secret: str | None = None
    reload_check_s: float = 0.25
    malloc_arenas: int | None = 2  # glibc arenas of the serving process (see limit_malloc_arenas)

    def check(self) -> None:
        if not self.api_keys and not self.no_auth:
            raise ConfigError("no API key configured",
                              remedy="set RAGMED_API_KEYS (comma-separated) or --api-key-file FILE; "
                                     "or pass --no-auth to serve without keys on a loopback address")
        if self.no_auth and not self.api_keys and not is_loopback(self.host):
            raise ConfigError(f"--no-auth is only allowed on a loopback address, not {self.host}",
                              remedy="configure API keys to serve on a network address")
        if self.workers < 1 or self.queue < 0:
            raise ConfigError("workers must be ≥ 1 and queue ≥ 0")


def read_api_keys(env_value: str | None = None, file: str | Path | None = None) -> tuple[str, ...]:
    """API keys from an environment variable's value (comma-separated) and/or a file (one per line, # comments)."""
    keys: list[str] = []
    if env_value:
        keys += [k.strip() for k in env_value.split(",") if k.strip()]
    if file:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read the API key file: {e.strerror}", path=str(file)) from None
        keys += [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    for k in keys:
        if len(k) < 16 or not k.isascii() or any(c.isspace() for c in k):
            raise ConfigError("an API key must be at least 16 printable ASCII characters without spaces",
                              remedy="generate one with `openssl rand -hex 24`")
    return tuple(dict.fromkeys(keys))


class PipelineHolder:
    """The pipeline being served, and the index version it serves. A new ``current`` version of the index is loaded
    in the background (``factory()`` + ``warm_up()``) and swapped in; requests in flight keep their pipeline."""

    def __init__(self, pipeline, factory: Callable[[], Any] | None = None, *, check_every: float = 0.25,
                 metrics=None):
        self.pipeline = pipeline
        self.factory = factory
        self.check_every = check_every
        self.metrics = metrics
        self.index_path = Path(pipeline.index_path)
        self.version = self._version_of(pipeline)
        self.error: str | None = None
        self._lock = threading.Lock()
        self._loading: threading.Thread | None = None
        self._loaded = threading.Condition()
        self._last_check = 0.0

    @staticmethod
    def _version_of(p) -> str | None:
        try:
            return p.store.version_dir.name
        except RagmedError:
            return None

    def live_version(self) -> str | None:
        """The version the index directory points at now (None when there is no readable index)."""
        cur = self.index_path / "current"
        try:
            if cur.is_symlink():
                target = cur.resolve(strict=True)
                return target.name if (target / "manifest.json").exists() else None
            return self.index_path.name if (self.index_path / "manifest.json").exists() else None
        except OSError:
            return None

    def current(self):
        now = time.monotonic()
        if self.factory is not None and now - self._last_check >= self.check_every:
            self._last_check = now
            live = self.live_version()
            if live is not None and live != self.version:
                self._start_reload()
        return self.pipeline

    def _start_reload(self) -> None:
        with self._lock:
            if self._loading is not None and self._loading.is_alive():
                return
            self._loading = threading.Thread(target=self._reload, name="ragmed index reload", daemon=True)
            self._loading.start()

    def _reload(self) -> None:
        try:
            p = self.factory()
            p.warm_up()
            v = self._version_of(p)
            with self._loaded:
                self.pipeline, self.version, self.error = p, v, None
                self._loaded.notify_all()
            log.info("index version loaded", extra={"fields": {"index_version": v}})
            if self.metrics is not None:
                self.metrics.reloads.labels("ok").inc()
        except Exception as e:  # noqa: BLE001 - the old version keeps serving; readiness reports the failure
            self.error = f"loading the new index version failed: {type(e).__name__}"
            log.error("index reload failed", extra={"fields": {"error": type(e).__name__}})
            if self.metrics is not None:
                self.metrics.reloads.labels("failed").inc()
            with self._loaded:
                self._loaded.notify_all()

    def call(self, fn: Callable[[Any], Any]):
        """``fn(pipeline)``; when it fails because the index version it used has been replaced (and removed), once
        more on the new version."""
        p = self.current()
        v = self.version
        try:
            return fn(p)
        except (QuestionError, *CLIENT_ERRORS, ConfigError):
            raise
        except Exception:
            live = self.live_version()
            if self.factory is None or live is None or live == v:
                raise
            log.warning("index version replaced during a request; retrying on the new one")
            self._start_reload()
            deadline = time.monotonic() + 300
            with self._loaded:
                while self.version == v and self.error is None and time.monotonic() < deadline:
                    self._loaded.wait(1.0)
            if self.version == v:
                raise
            return fn(self.pipeline)

    def readiness(self) -> tuple[bool, str]:
        live = self.live_version()
        if live is None:
            return False, "the index directory has no readable current version"
        if self.error:
            return False, self.error
        if live != self.version:
            return True, f"serving {self.version}; loading {live}"
        return True, "ready"


class WorkQueue:
    """A fixed pool of worker threads; admission (the bound) is counted by the guard before the body is read."""

    def __init__(self, workers: int, admission):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ragmed-worker")
        self.admission = admission
        self._lock = threading.Lock()

    async def run(self, fn, *args):
        import asyncio
        import contextvars

        ctx = contextvars.copy_context()

        def job():
            with self._lock:
                self.admission.running += 1
            try:
                return ctx.run(fn, *args)
            finally:
                with self._lock:
                    self.admission.running -= 1

        return await asyncio.get_running_loop().run_in_executor(self.pool, job)


def create_app(pipeline, settings: ServiceSettings | None = None, *, factory: Callable[[], Any] | None = None,
               api_key: str | None = None, max_upload_mb: float | None = None):
    """The ASGI app answering with ``pipeline`` (a loaded :class:`~ragmed.pipeline.Pipeline`). ``factory`` builds a
    fresh pipeline for the same index (used when the index gets a new version). ``api_key`` / ``max_upload_mb`` are
    shorthands for the settings. The routes share one :class:`~ragmed.serve.context.ServiceContext`."""
    from ragmed.serve.guard import Admission, Guard, GuardConfig
    from ragmed.serve.metrics import Metrics
    from ragmed.serve.routes import add_answer_routes, add_error_handlers, add_evidence_routes, add_operations_routes

    s = _settings(settings, api_key, max_upload_mb)
    admission = Admission(s.workers + s.queue)
    metrics = Metrics(admission)
    holder = PipelineHolder(pipeline, factory, check_every=s.reload_check_s, metrics=metrics)
    ctx = ServiceContext(s, holder, WorkQueue(s.workers, admission), admission, metrics)
    app = _fastapi_app(ctx)
    add_error_handlers(app, ctx)
    add_operations_routes(app, ctx)
    add_answer_routes(app, ctx)
    add_evidence_routes(app, ctx)
    _mount_docs(app)
    from ragmed.serve.viewer import mount_viewer

    mount_viewer(app)
    if s.cds is not None:
        from ragmed.serve.cds import mount_cds

        mount_cds(app, s.cds)
    return Guard(app, GuardConfig(api_keys=s.api_keys, max_body_bytes=int(s.max_upload_mb * (1 << 20)),
                                  chunk_timeout_s=s.chunk_timeout_s, body_timeout_s=s.body_timeout_s,
                                  capacity=s.workers + s.queue, retry_after_s=s.retry_after_s,
                                  signed_ok=ctx.signed_ok),
                 admission, metrics)


def _settings(settings: ServiceSettings | None, api_key: str | None, max_upload_mb: float | None) -> ServiceSettings:
    s = settings or ServiceSettings(no_auth=api_key is None)
    if api_key:
        s.api_keys = (*s.api_keys, api_key)
    if max_upload_mb is not None:
        s.max_upload_mb = max_upload_mb
    s.check()
    return s


def _fastapi_app(ctx: ServiceContext):
    """The FastAPI app (no routes yet): its lifespan logs start and drains the work queue at shutdown; ``app.state``
    exposes the context's pieces to the mounted sub-services (CDS Hooks)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    s, holder, queue = ctx.settings, ctx.holder, ctx.queue

    @asynccontextmanager
    async def lifespan(_app):
        log.info("serving", extra={"fields": {"index_version": holder.version, "workers": s.workers,
                                              "queue": s.queue, "auth": bool(s.api_keys)}})
        yield
        queue.pool.shutdown(wait=True)  # uvicorn has stopped accepting and finished the requests in flight
        log.info("shutdown complete")

    app = FastAPI(title="ragmed", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json",
                  description="Multimodal medical retrieval-augmented answers with cited evidence. Decision support "
                              "only, not a diagnosis. Authenticate with `Authorization: Bearer KEY`.")
    app.state.holder, app.state.metrics, app.state.settings = holder, ctx.metrics, s
    app.state.sign, app.state.answer_body, app.state.run_request = ctx.sign, ctx.answer_body, ctx.run_request
    app.state.queue, app.state.error = queue, ctx.error
    return app


def _mount_docs(app) -> None:
    """Swagger UI from the ``swagger-ui-bundle`` package's files: the page works offline."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    try:
        import swagger_ui_bundle

        app.mount("/docs/static", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-static")
    except ImportError:  # the page then says it cannot load; /openapi.json still works
        pass

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="ragmed API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")


def limit_malloc_arenas(n: int | None) -> bool:
    """Cap glibc's malloc arenas for this (service) process, as ``MALLOC_ARENA_MAX`` would: with the default (8 per
    core) the RSS of a server under 50 concurrent clients crept from 572 to 630 MB in two minutes; with 2 it stayed
    flat (eval/results/bench_serve*.json). No-op off glibc, when ``n`` is falsy, or when the environment sets it."""
    import ctypes
    import ctypes.util
    import os

    if not n or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-8, int(n)))  # M_ARENA_MAX
    except (OSError, AttributeError):
        return False


def run(pipeline, settings: ServiceSettings | None = None, *, factory=None, host: str = "127.0.0.1",
        port: int = 8080, log_level: str = "info", **kw) -> None:
    """Load the pipeline's models, then serve until interrupted (SIGINT / SIGTERM: stop accepting, finish the
    requests in flight for up to 30 s, exit)."""
    import uvicorn

    from ragmed.serve.guard import configure_logging, header_timeout_protocol

    s = settings or ServiceSettings(host=host, **kw)
    s.host = host
    s.check()
    configure_logging(log_level)
    limit_malloc_arenas(s.malloc_arenas)
    pipeline.warm_up()
    app = create_app(pipeline, s, factory=factory)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_keep_alive=5,
                http=header_timeout_protocol(s.chunk_timeout_s),
                timeout_graceful_shutdown=30, h11_max_incomplete_event_size=64 * 1024)
