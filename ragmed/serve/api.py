"""ragmed's question-answering HTTP service, for clinical decision-support apps.

    ragmed serve api --index indexes/demo --port 8080
    curl -F image=@scan.dcm -F question="Is there a pleural effusion?" http://127.0.0.1:8080/v1/ask

Routes:

- ``GET /health``: ``{"status": "ok", "pipeline", "index_version", "answer_schema"}``.
- ``POST /v1/ask``: a multipart form with ``question`` (text), an optional ``image`` file (DICOM, PNG or JPEG) and
  an optional ``k``. The reply is the answer JSON of ``ragmed ask --json`` (``Answer.to_dict()``, schema in the
  README): cited evidence, knowledge, the insufficient-evidence flag and the intended-use notice.
- ``POST /v1/retrieve``: the same form. The reply is the retrieval alone: domain, candidates with their channel
  scores, and whether the evidence is insufficient.

Errors are ``{"error": {"type", "message"}}``:

- 400 for input ragmed refuses (an undecodable or non-medical image, a missing question);
- 401 for a missing or wrong API key (``--api-key-env``);
- 413 for an upload over ``max_upload_mb``;
- 500, with a generic message, for anything else. Details go to the server log, never to the client.

An uploaded image is written to a private temporary directory under the name ``upload``, never under the client's
file name, which may carry identifiers. It is deleted when the request ends. The pipeline loads once at start-up;
requests run in FastAPI's thread pool and share it (:class:`~ragmed.pipeline.Pipeline` is thread-safe).
"""
from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import File, Form, UploadFile  # at module level: the endpoints' annotations are resolved here

from ragmed.errors import DomainError, ImageError, RagmedError

log = logging.getLogger("ragmed.serve.api")

CLIENT_ERRORS = (ImageError, DomainError)  # the request's own input is at fault: 400


def _error(status: int, type_: str, message: str):
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": {"type": type_, "message": message}})


def create_app(pipeline, *, api_key: str | None = None, max_upload_mb: float = 64.0):
    """The FastAPI app answering with ``pipeline`` (a loaded :class:`~ragmed.pipeline.Pipeline`). With ``api_key``,
    ``/v1/`` requests must send ``Authorization: Bearer KEY``."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError

    from ragmed.types import ANSWER_SCHEMA

    limit = int(max_upload_mb * 1024 * 1024)
    app = FastAPI(title="ragmed question answering", version="1")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(x) for x in first.get("loc", ())[1:])
        return _error(400, "invalid_request", f"{loc}: {first.get('msg', 'invalid request')}" if loc
                      else "invalid request")

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            if not secrets.compare_digest(request.headers.get("authorization", ""), f"Bearer {api_key}"):
                return _error(401, "authentication_error", "invalid API key")
        return await call_next(request)

    @app.get("/health")
    def health() -> dict[str, Any]:
        try:
            version = pipeline.store.version_dir.name
        except RagmedError:
            version = None
        return {"status": "ok", "pipeline": pipeline.config.name, "index_version": version,
                "answer_schema": ANSWER_SCHEMA}

    def handle(image: UploadFile | None, fn):
        work = Path(tempfile.mkdtemp(prefix="ragmed-upload-"))
        try:
            path = None
            if image is not None and image.filename is not None:
                path = work / "upload"
                size = 0
                with path.open("wb") as f:
                    while chunk := image.file.read(1 << 20):
                        size += len(chunk)
                        if size > limit:
                            return _error(413, "upload_too_large", f"the image is larger than {max_upload_mb:g} MB")
                        f.write(chunk)
                if size == 0:
                    return _error(400, "invalid_request", "image: the uploaded file is empty")
            from ragmed.io import load_image

            return fn(None if path is None else load_image(path, root=work))  # named "upload" in errors, answers
        except CLIENT_ERRORS as e:
            return _error(400, type(e).__name__, str(e).replace(str(work) + "/", ""))
        except RagmedError as e:
            log.error("request failed: %s", e)
            return _error(500, type(e).__name__, "ragmed could not answer this request (see the server log)")
        except Exception:  # noqa: BLE001 - the client gets a generic message, the log the traceback
            log.exception("request failed")
            return _error(500, "internal_error", "ragmed could not answer this request (see the server log)")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @app.post("/v1/ask")
    def ask(question: str = Form(..., min_length=1, max_length=4000), image: UploadFile | None = File(None),
            k: int | None = Form(None, ge=1, le=100)):
        return handle(image, lambda p: pipeline.ask(p, question, k=k).to_dict())

    @app.post("/v1/retrieve")
    def retrieve(question: str = Form("", max_length=4000), image: UploadFile | None = File(None),
                 k: int | None = Form(None, ge=1, le=100)):
        def go(p):
            if p is None and not question.strip():
                return _error(400, "invalid_request", "send an image, a question or both")
            r = pipeline.retrieve(p, question, k=k)
            return {"domain": r.domain, "domain_confidence": r.domain_confidence, "insufficient": r.insufficient,
                    "reason": r.reason, "candidates": [e.to_dict() for e in r.candidates],
                    "timings": r.timings}

        return handle(image, go)

    return app


def run(pipeline, *, host: str = "127.0.0.1", port: int = 8080, api_key: str | None = None,
        max_upload_mb: float = 64.0, log_level: str = "warning") -> None:
    """Load the pipeline's models, then serve until interrupted."""
    import uvicorn

    pipeline.warm_up()
    uvicorn.run(create_app(pipeline, api_key=api_key, max_upload_mb=max_upload_mb), host=host, port=port,
                log_level=log_level)
