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

import hashlib
import hmac
import io
import ipaddress
import logging
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from fastapi import File, Form, UploadFile  # at module level: the endpoints' annotations are resolved here

from ragmed.errors import ConfigError, DomainError, ImageError, ImageTooLargeError, RagmedError
from ragmed.api import MAX_QUESTION_CHARS, QuestionError
from ragmed.api import validate_question as _validate

log = logging.getLogger("ragmed.serve.api")

CLIENT_ERRORS = (ImageError, DomainError)  # the request's own input is at fault: 400
LOOPBACK_NAMES = {"localhost"}


def validate_question(question: str | None, *, required: bool = True, max_chars: int = MAX_QUESTION_CHARS) -> str:
    """The service's question check: ragmed's one validation (:func:`ragmed.text.questions.validate_question`,
    the same rules and messages as the CLI and the Python API); ``required=False`` lets a report request through."""
    return _validate(question, allow_empty=not required, max_chars=max_chars)


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


def declared_size(path: Path) -> tuple[int, int] | None:
    """(width, height) that a PNG or JPEG file declares in its header, read without a decoder (None for other files
    or an unreadable header). DICOM's Rows / Columns are checked by ragmed.io before decoding."""
    import struct

    with open(path, "rb") as f:
        head = f.read(64 * 1024)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24 and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        return w, h
    if head.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(head):
            if head[i] != 0xFF:
                return None
            marker = head[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            seg = struct.unpack(">H", head[i + 2:i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", head[i + 5:i + 9])
                return w, h
            i += 2 + seg
    return None


def check_declared_size(path: Path, max_pixels: int) -> None:
    """Refuse (413) a PNG / JPEG whose header declares more than ``max_pixels`` pixels, before any decoder sees it
    (Pillow would otherwise call a file over twice its own limit a decompression bomb: a 400 DecodeError)."""
    size = declared_size(path)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageTooLargeError(f"{size[0]}x{size[1]} pixels exceeds the limit of {max_pixels}", path="upload",
                                 remedy="send a smaller image")


def image_id(secret: bytes, case_id: str, source: str) -> str:
    """The opaque id of an indexed image: a keyed hash of its case and corpus path (the path never leaves)."""
    return "img-" + hmac.new(secret, f"{case_id}\0{source}".encode(), hashlib.sha256).hexdigest()[:24]


def create_app(pipeline, settings: ServiceSettings | None = None, *, factory: Callable[[], Any] | None = None,
               api_key: str | None = None, max_upload_mb: float | None = None):
    """The ASGI app answering with ``pipeline`` (a loaded :class:`~ragmed.pipeline.Pipeline`). ``factory`` builds a
    fresh pipeline for the same index (used when the index gets a new version). ``api_key`` / ``max_upload_mb`` are
    shorthands for the settings."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from ragmed.serve.guard import Admission, Guard, GuardConfig
    from ragmed.serve.metrics import Metrics
    from ragmed.types import ANSWER_SCHEMA

    s = settings or ServiceSettings(no_auth=api_key is None)
    if api_key:
        s.api_keys = (*s.api_keys, api_key)
    if max_upload_mb is not None:
        s.max_upload_mb = max_upload_mb
    s.check()
    admission = Admission(s.workers + s.queue)
    metrics = Metrics(admission)
    holder = PipelineHolder(pipeline, factory, check_every=s.reload_check_s, metrics=metrics)
    queue = WorkQueue(s.workers, admission)
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app):
        log.info("serving", extra={"fields": {"index_version": holder.version, "workers": s.workers,
                                              "queue": s.queue, "auth": bool(s.api_keys)}})
        yield
        queue.pool.shutdown(wait=True)  # uvicorn has stopped accepting and finished the requests in flight
        log.info("shutdown complete")

    app = FastAPI(title="ragmed", version="1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url="/openapi.json",
                  description="Multimodal medical retrieval-augmented answers with cited evidence. Decision support "
                              "only, not a diagnosis. Authenticate with `Authorization: Bearer KEY`.")
    app.state.holder, app.state.metrics, app.state.settings = holder, metrics, s

    def error(status: int, type_: str, message: str, headers: dict | None = None):
        metrics.errors.labels(type_).inc()
        return JSONResponse(status_code=status, content={"error": {"type": type_, "message": message}},
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(x) for x in first.get("loc", ())[1:])
        return error(400, "invalid_request", f"{loc}: {first.get('msg', 'invalid request')}" if loc
                     else "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc):
        kinds = {404: "not_found", 405: "method_not_allowed", 413: "upload_too_large", 400: "invalid_request"}
        msg = exc.detail if isinstance(exc.detail, str) else "invalid request"
        if exc.status_code == 400 and "parsing the body" in msg:
            msg = "the request body is not a valid multipart form"
        return error(exc.status_code, kinds.get(exc.status_code, "http_error"), msg,
                     headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc):
        log.error("unhandled error", extra={"fields": {"error": type(exc).__name__}})
        return error(500, "internal_error", "ragmed could not answer this request (see the server log)")

    secret_cache: dict[str, bytes] = {}

    def id_secret(p) -> bytes:
        if s.image_id_secret:
            return s.image_id_secret.encode()
        v = holder.version or ""
        if v not in secret_cache:
            try:
                checksum = str(p.store.manifest.get("corpus", {}).get("checksum", ""))
            except RagmedError:
                checksum = ""
            secret_cache[v] = hashlib.sha256(b"ragmed-image-id\0" + checksum.encode()).digest()
        return secret_cache[v]

    def public_evidence(p, items: list[dict]) -> list[dict]:
        """Evidence as clients see it: case id + opaque image id + thumbnail URL; the file name only if allowed."""
        out = []
        sec = id_secret(p)
        for e in items:
            e = dict(e)
            src = e.get("image")
            if src:
                iid = image_id(sec, e["case_id"], src)
                e["image_id"] = iid
                e["thumbnail"] = f"/v1/cases/{e['case_id']}/images/{iid}/thumbnail"
                if not s.allow_names:
                    e["image"] = None
            else:
                e["image_id"] = e["thumbnail"] = None
            out.append(e)
        return out

    # --- loading the request's image ----------------------------------------------------------------------------
    def load_request_image(work: Path, upload: UploadFile | None, study: str | None, series: str | None,
                           instance: str | None):
        from ragmed.api import load_image  # the service decodes uploads itself: it enforces the pixel limit

        if upload is not None and upload.filename is not None:
            path = work / "upload"
            size = 0
            with path.open("wb") as f:
                while chunk := upload.file.read(1 << 20):
                    size += len(chunk)
                    f.write(chunk)
            if size == 0:
                raise ImageError("image: the uploaded file is empty")
            check_declared_size(path, s.max_image_pixels)
            return load_image(path, root=work, max_pixels=s.max_image_pixels), None
        if study:
            ref = study_reference(study, series, instance)
            if not s.dicomweb_url:
                raise ConfigError("this service has no PACS configured (--dicomweb URL) for study references")
            from ragmed.api import DicomWebSource

            img = DicomWebSource(s.dicomweb_url).load_reference(ref, work, max_instances=s.max_study_instances,
                                                                   max_pixels=s.max_image_pixels)
            return img, ref
        return None, None

    def run_request(upload, study, series, instance, fn):
        work = Path(tempfile.mkdtemp(prefix="ragmed-upload-"))
        try:
            img, ref = load_request_image(work, upload, study, series, instance)
            return holder.call(lambda p: fn(p, img, ref))
        except QuestionError as e:
            return error(400, "invalid_question", str(e))
        except ImageTooLargeError as e:
            return error(413, "image_too_large", str(e).replace(str(work) + "/", ""))
        except CLIENT_ERRORS as e:
            return error(400, type(e).__name__, str(e).replace(str(work) + "/", ""))
        except ConfigError as e:
            return error(400, "invalid_request", str(e))
        except RagmedError as e:
            from ragmed.api import StudyNotFoundError, PacsError

            if isinstance(e, StudyNotFoundError):
                return error(404, "study_not_found", str(e))
            if isinstance(e, PacsError):
                return error(502, "pacs_error", str(e))
            log.error("request failed", extra={"fields": {"error": type(e).__name__}})
            return error(500, type(e).__name__, "ragmed could not answer this request (see the server log)")
        except Exception as e:  # noqa: BLE001 - the client gets a generic message, the log the error type
            log.error("request failed", extra={"fields": {"error": type(e).__name__}})
            return error(500, "internal_error", "ragmed could not answer this request (see the server log)")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def answer_body(p, a, ref, fmt: str):
        d = a.to_dict()
        d["evidence"] = public_evidence(p, d["evidence"])
        if ref is not None:
            d["image"]["study"] = ref.to_dict()
        metrics.answer(len(d["evidence"]), bool(d["insufficient_evidence"]))
        if fmt == "fhir":
            from ragmed.serve.fhir import diagnostic_report

            return diagnostic_report(d, study_uid=ref.study if ref is not None else None, index_version=holder.version)
        if fmt == "fhir-guidance":
            from ragmed.serve.fhir import guidance_response
            from ragmed.serve.guard import request_id

            return guidance_response(d, service_uri="urn:ragmed:v1:ask", request_id=request_id.get(),
                                     study_uid=ref.study if ref is not None else None)
        return d

    sign_key = secrets.token_bytes(32)

    def sign(path: str, ttl: int = 3600) -> str:
        """A link to a thumbnail that works without the API key until it expires (for CDS cards)."""
        exp = int(time.time()) + ttl
        sig = hmac.new(sign_key, f"{path}\0{exp}".encode(), hashlib.sha256).hexdigest()[:32]
        return f"{path}?exp={exp}&sig={sig}"

    def signed_ok(path: str, query: bytes) -> bool:
        if not (path.startswith("/v1/cases/") and path.endswith("/thumbnail")):
            return False
        from urllib.parse import parse_qs

        try:
            q = parse_qs(query.decode("ascii"))
            exp, sig = int(q["exp"][0]), q["sig"][0]
        except (KeyError, ValueError, UnicodeDecodeError):
            return False
        want = hmac.new(sign_key, f"{path}\0{exp}".encode(), hashlib.sha256).hexdigest()[:32]
        return exp >= time.time() and hmac.compare_digest(want.encode(), sig.encode())

    app.state.sign = sign
    app.state.answer_body = answer_body
    app.state.run_request = run_request
    app.state.queue = queue
    app.state.error = error

    # --- routes -------------------------------------------------------------------------------------------------
    @app.get("/health", tags=["operations"], summary="Liveness")
    def health() -> dict[str, Any]:
        p = holder.pipeline
        return {"status": "ok", "pipeline": p.config.name, "index_version": holder.version,
                "answer_schema": ANSWER_SCHEMA}

    @app.get("/readyz", tags=["operations"], summary="Readiness: models loaded and the live index served",
             responses={503: {"description": "not ready"}})
    def readyz():
        ok, why = holder.readiness()
        if not ok:
            return error(503, "not_ready", why)
        return {"status": "ready", "detail": why, "index_version": holder.version,
                "queue": {"admitted": admission.admitted, "capacity": admission.capacity}}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    def prometheus():
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    form_docs = {400: {"description": "invalid input"}, 401: {"description": "missing or wrong API key"},
                 413: {"description": "body or image too large"}, 503: {"description": "queue full (Retry-After)"}}

    @app.post("/v1/ask", tags=["answers"], summary="Answer a question about an image, with cited evidence",
              responses=form_docs)
    async def ask(question: str = Form(..., description="the clinical question"),
                  image: UploadFile | None = File(None, description="DICOM, PNG or JPEG"),
                  study: str | None = Form(None, description="StudyInstanceUID in the configured PACS"),
                  series: str | None = Form(None), instance: str | None = Form(None),
                  k: int | None = Form(None, ge=1, le=100),
                  format: Literal["json", "fhir", "fhir-guidance"] = Form(
                      "json", description="json; fhir: a FHIR R4B DiagnosticReport; fhir-guidance: a GuidanceResponse")):
        try:
            q = validate_question(question, max_chars=s.max_question_chars)
        except QuestionError as e:
            return error(400, "invalid_question", str(e))
        return await queue.run(run_request, image, study, series, instance,
                               lambda p, img, ref: answer_body(p, p.ask(img, q, k=k), ref, format))

    @app.post("/v1/retrieve", tags=["answers"], summary="Retrieve evidence for an image and/or question",
              responses=form_docs)
    async def retrieve(question: str = Form(""), image: UploadFile | None = File(None),
                       study: str | None = Form(None), series: str | None = Form(None),
                       instance: str | None = Form(None), k: int | None = Form(None, ge=1, le=100)):
        try:
            q = validate_question(question, required=False, max_chars=s.max_question_chars)
        except QuestionError as e:
            return error(400, "invalid_question", str(e))

        def go(p, img, ref):
            if img is None and not q:
                return error(400, "invalid_request", "send an image, a question or both")
            r = p.retrieve(img, q, k=k)
            return {"domain": r.domain, "domain_confidence": r.domain_confidence, "insufficient": r.insufficient,
                    "reason": r.reason, "candidates": public_evidence(p, [e.to_dict() for e in r.candidates]),
                    "timings": r.timings}

        return await queue.run(run_request, image, study, series, instance, go)

    @app.get("/v1/cases/{case_id}/images/{image_ref}/thumbnail", tags=["evidence"],
             summary="A PNG thumbnail of an indexed evidence image", response_class=Response,
             responses={200: {"content": {"image/png": {}}}, 404: {"description": "unknown image"}})
    async def thumbnail(case_id: str, image_ref: str, size: int = 256):
        size = max(32, min(512, size))
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(queue.pool, render_thumbnail, case_id, image_ref,
                                                                size)

    thumb_cache: dict[tuple, bytes] = {}

    def render_thumbnail(case_id: str, image_ref: str, size: int):
        if not s.corpus_root:
            return error(404, "thumbnails_unavailable", "this service was started without --corpus-root")
        key = (holder.version, case_id, image_ref, size)
        if key in thumb_cache:
            return Response(thumb_cache[key], media_type="image/png", headers={"Cache-Control": "private, max-age=600"})
        p = holder.pipeline
        try:
            rec = p.store.cases([case_id]).get(case_id)
        except Exception:  # noqa: BLE001
            rec = None
        if rec is None:
            return error(404, "not_found", "unknown case")
        sec = id_secret(p)
        src = next((im["source"] for im in rec.images if image_id(sec, case_id, im["source"]) == image_ref), None)
        if src is None:
            return error(404, "not_found", "unknown image")
        from PIL import Image

        from ragmed.api import load_image

        root = Path(s.corpus_root)
        try:
            img = load_image(root / src, root=root, max_pixels=s.max_image_pixels)
        except RagmedError as e:
            log.warning("thumbnail failed", extra={"fields": {"error": type(e).__name__}})
            return error(404, "image_unavailable", "the indexed image cannot be read on this server")
        import numpy as np

        arr = np.clip(img.pixels * 255.0, 0, 255).astype("uint8")
        im = Image.fromarray(arr)
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        data = buf.getvalue()
        if len(thumb_cache) > 512:
            thumb_cache.clear()
        thumb_cache[key] = data
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=600"})

    # --- docs (local Swagger UI) and the viewer ---------------------------------------------------------------
    _mount_docs(app)
    from ragmed.serve.viewer import mount_viewer

    mount_viewer(app)
    if s.cds is not None:
        from ragmed.serve.cds import mount_cds

        mount_cds(app, s.cds)

    return Guard(app, GuardConfig(api_keys=s.api_keys, max_body_bytes=int(s.max_upload_mb * (1 << 20)),
                                  chunk_timeout_s=s.chunk_timeout_s, body_timeout_s=s.body_timeout_s,
                                  capacity=s.workers + s.queue, retry_after_s=s.retry_after_s,
                                  signed_ok=signed_ok),
                 admission, metrics)


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


def study_reference(study: str, series: str | None = None, instance: str | None = None):
    from ragmed.api import StudyRef

    return StudyRef.parse(study, series, instance)


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
