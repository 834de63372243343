"""The HTTP service's routes, grouped by what they serve; each ``add_*`` function registers its group on the app
with the shared :class:`~ragmed.serve.context.ServiceContext` (see :mod:`ragmed.serve.api` for the route list)."""
from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import File, Form, UploadFile  # at module level: the endpoints' annotations are resolved here

from ragmed.api import QuestionError
from ragmed.serve.context import ServiceContext, validate_question

log = logging.getLogger("ragmed.serve.api")

FORM_DOCS = {400: {"description": "invalid input"}, 401: {"description": "missing or wrong API key"},
             413: {"description": "body or image too large"}, 503: {"description": "queue full (Retry-After)"}}
HTTP_KINDS = {404: "not_found", 405: "method_not_allowed", 413: "upload_too_large", 400: "invalid_request"}


def add_error_handlers(app, ctx: ServiceContext) -> None:
    """FastAPI's own errors (validation, 404 / 405, anything unexpected) in ragmed's one error shape."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    error = ctx.error

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(x) for x in first.get("loc", ())[1:])
        return error(400, "invalid_request", f"{loc}: {first.get('msg', 'invalid request')}" if loc
                     else "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc):
        msg = exc.detail if isinstance(exc.detail, str) else "invalid request"
        if exc.status_code == 400 and "parsing the body" in msg:
            msg = "the request body is not a valid multipart form"
        return error(exc.status_code, HTTP_KINDS.get(exc.status_code, "http_error"), msg,
                     headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc):
        log.error("unhandled error", extra={"fields": {"error": type(exc).__name__}})
        return error(500, "internal_error", "ragmed could not answer this request (see the server log)")


def add_operations_routes(app, ctx: ServiceContext) -> None:
    """``/health``, ``/readyz``, ``/metrics``."""
    from fastapi.responses import Response

    from ragmed.types import ANSWER_SCHEMA

    holder = ctx.holder

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
            return ctx.error(503, "not_ready", why)
        return {"status": "ready", "detail": why, "index_version": holder.version,
                "queue": {"admitted": ctx.admission.admitted, "capacity": ctx.admission.capacity}}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    def prometheus():
        body, ctype = ctx.metrics.render()
        return Response(body, media_type=ctype)


def add_answer_routes(app, ctx: ServiceContext) -> None:
    """``POST /v1/ask`` and ``POST /v1/retrieve``: a multipart form, the work run on the queue."""
    s, error, queue = ctx.settings, ctx.error, ctx.queue

    @app.post("/v1/ask", tags=["answers"], summary="Answer a question about an image, with cited evidence",
              responses=FORM_DOCS)
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
        return await queue.run(ctx.run_request, image, study, series, instance,
                               lambda p, img, ref: ctx.answer_body(p, p.ask(img, q, k=k), ref, format))

    @app.post("/v1/retrieve", tags=["answers"], summary="Retrieve evidence for an image and/or question",
              responses=FORM_DOCS)
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
                    "reason": r.reason, "candidates": ctx.public_evidence(p, [e.to_dict() for e in r.candidates]),
                    "timings": r.timings}

        return await queue.run(ctx.run_request, image, study, series, instance, go)


def add_evidence_routes(app, ctx: ServiceContext) -> None:
    """``GET /v1/cases/{case_id}/images/{image_id}/thumbnail``: rendered on the work pool."""
    from fastapi.responses import Response

    @app.get("/v1/cases/{case_id}/images/{image_ref}/thumbnail", tags=["evidence"],
             summary="A PNG thumbnail of an indexed evidence image", response_class=Response,
             responses={200: {"content": {"image/png": {}}}, 404: {"description": "unknown image"}})
    async def thumbnail(case_id: str, image_ref: str, size: int = 256):
        import asyncio

        size = max(32, min(512, size))
        return await asyncio.get_running_loop().run_in_executor(ctx.queue.pool, ctx.render_thumbnail, case_id,
                                                                image_ref, size)
