"""What every route of the HTTP service shares (:class:`ServiceContext`): the settings, the live pipeline (swapped
when the index gets a new version), the work queue, the metrics, the error shape, the request's image loading, the
public form of evidence (opaque image ids) and the signed thumbnail links. :func:`ragmed.serve.api.create_app`
builds one per app; :mod:`ragmed.serve.routes` and :mod:`ragmed.serve.cds` call its methods."""
from __future__ import annotations

import hashlib
import hmac
import io
import logging
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ragmed.api import MAX_QUESTION_CHARS, QuestionError
from ragmed.api import validate_question as _validate
from ragmed.cache import BoundedCache
from ragmed.errors import ConfigError, DomainError, ImageError, ImageTooLargeError, RagmedError

log = logging.getLogger("ragmed.serve.api")

CLIENT_ERRORS = (ImageError, DomainError)  # the request's own input is at fault: 400
THUMBNAILS_KEPT = 512  # rendered thumbnails kept (least recently used dropped first)
SECRETS_KEPT = 8  # per index version: the image-id secret


def validate_question(question: str | None, *, required: bool = True, max_chars: int = MAX_QUESTION_CHARS) -> str:
    """The service's question check: ragmed's one validation (:func:`ragmed.text.questions.validate_question`,
    the same rules and messages as the CLI and the Python API); ``required=False`` lets a report request through."""
    return _validate(question, allow_empty=not required, max_chars=max_chars)


def image_id(secret: bytes, case_id: str, source: str) -> str:
    """The opaque id of an indexed image: a keyed hash of its case and corpus path (the path never leaves)."""
    return "img-" + hmac.new(secret, f"{case_id}\0{source}".encode(), hashlib.sha256).hexdigest()[:24]


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


def study_reference(study: str, series: str | None = None, instance: str | None = None):
    from ragmed.api import StudyRef

    return StudyRef.parse(study, series, instance)


class ServiceContext:
    def __init__(self, settings, holder, queue, admission, metrics):
        self.settings, self.holder, self.queue, self.admission, self.metrics = settings, holder, queue, admission, metrics
        self._secrets: BoundedCache[str, bytes] = BoundedCache(SECRETS_KEPT)
        self._thumbs: BoundedCache[tuple, bytes] = BoundedCache(THUMBNAILS_KEPT)
        self._sign_key = secrets.token_bytes(32)

    # --- the one error shape ----------------------------------------------------------------------------------
    def error(self, status: int, type_: str, message: str, headers: dict | None = None):
        from fastapi.responses import JSONResponse

        self.metrics.errors.labels(type_).inc()
        return JSONResponse(status_code=status, content={"error": {"type": type_, "message": message}},
                            headers=headers)

    # --- evidence as clients see it ---------------------------------------------------------------------------
    def id_secret(self, p) -> bytes:
        s = self.settings
        if s.image_id_secret:
            return s.image_id_secret.encode()

        def derive() -> bytes:
            try:
                checksum = str(p.store.manifest.get("corpus", {}).get("checksum", ""))
            except RagmedError:
                checksum = ""
            return hashlib.sha256(b"ragmed-image-id\0" + checksum.encode()).digest()

        return self._secrets.get_or_create(self.holder.version or "", derive)

    def public_evidence(self, p, items: list[dict]) -> list[dict]:
        """Evidence as clients see it: case id + opaque image id + thumbnail URL; the file name only if allowed."""
        out = []
        sec = self.id_secret(p)
        for e in items:
            e = dict(e)
            src = e.get("image")
            if src:
                iid = image_id(sec, e["case_id"], src)
                e["image_id"] = iid
                e["thumbnail"] = f"/v1/cases/{e['case_id']}/images/{iid}/thumbnail"
                if not self.settings.allow_names:
                    e["image"] = None
            else:
                e["image_id"] = e["thumbnail"] = None
            out.append(e)
        return out

    def answer_body(self, p, a, ref, fmt: str):
        d = a.to_dict()
        d["evidence"] = self.public_evidence(p, d["evidence"])
        if ref is not None:
            d["image"]["study"] = ref.to_dict()
        self.metrics.answer(len(d["evidence"]), bool(d["insufficient_evidence"]))
        if fmt == "fhir":
            from ragmed.serve.fhir import diagnostic_report

            return diagnostic_report(d, study_uid=ref.study if ref is not None else None,
                                     index_version=self.holder.version)
        if fmt == "fhir-guidance":
            from ragmed.serve.fhir import guidance_response
            from ragmed.serve.guard import request_id

            return guidance_response(d, service_uri="urn:ragmed:v1:ask", request_id=request_id.get(),
                                     study_uid=ref.study if ref is not None else None)
        return d

    # --- a request: its image, then the pipeline, errors mapped to statuses -----------------------------------
    def load_request_image(self, work: Path, upload, study: str | None, series: str | None, instance: str | None):
        from ragmed.api import load_image  # the service decodes uploads itself: it enforces the pixel limit
        s = self.settings
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

    def run_request(self, upload, study, series, instance, fn: Callable[[Any, Any, Any], Any]):
        error = self.error
        work = Path(tempfile.mkdtemp(prefix="ragmed-upload-"))
        try:
            img, ref = self.load_request_image(work, upload, study, series, instance)
            return self.holder.call(lambda p: fn(p, img, ref))
        except QuestionError as e:
            return error(400, "invalid_question", str(e))
        except ImageTooLargeError as e:
            return error(413, "image_too_large", str(e).replace(str(work) + "/", ""))
        except CLIENT_ERRORS as e:
            return error(400, type(e).__name__, str(e).replace(str(work) + "/", ""))
        except ConfigError as e:
            return error(400, "invalid_request", str(e))
        except RagmedError as e:
            from ragmed.api import PacsError, StudyNotFoundError

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

    # --- signed thumbnail links (CDS cards) ---------------------------------------------------------------------
    def sign(self, path: str, ttl: int = 3600) -> str:
        """A link to a thumbnail that works without the API key until it expires (for CDS cards)."""
        exp = int(time.time()) + ttl
        sig = hmac.new(self._sign_key, f"{path}\0{exp}".encode(), hashlib.sha256).hexdigest()[:32]
        return f"{path}?exp={exp}&sig={sig}"

    def signed_ok(self, path: str, query: bytes) -> bool:
        if not (path.startswith("/v1/cases/") and path.endswith("/thumbnail")):
            return False
        from urllib.parse import parse_qs

        try:
            q = parse_qs(query.decode("ascii"))
            exp, sig = int(q["exp"][0]), q["sig"][0]
        except (KeyError, ValueError, UnicodeDecodeError):
            return False
        want = hmac.new(self._sign_key, f"{path}\0{exp}".encode(), hashlib.sha256).hexdigest()[:32]
        return exp >= time.time() and hmac.compare_digest(want.encode(), sig.encode())

    # --- thumbnails ---------------------------------------------------------------------------------------------
    def render_thumbnail(self, case_id: str, image_ref: str, size: int):
        from fastapi.responses import Response

        s, error = self.settings, self.error
        headers = {"Cache-Control": "private, max-age=600"}
        if not s.corpus_root:
            return error(404, "thumbnails_unavailable", "this service was started without --corpus-root")
        key = (self.holder.version, case_id, image_ref, size)
        data = self._thumbs.get(key)
        if data is not None:
            return Response(data, media_type="image/png", headers=headers)
        p = self.holder.pipeline
        try:
            rec = p.store.cases([case_id]).get(case_id)
        except Exception:  # noqa: BLE001
            rec = None
        if rec is None:
            return error(404, "not_found", "unknown case")
        sec = self.id_secret(p)
        src = next((im["source"] for im in rec.images if image_id(sec, case_id, im["source"]) == image_ref), None)
        if src is None:
            return error(404, "not_found", "unknown image")
        data = self._thumbnail_png(Path(s.corpus_root), src, size)
        if data is None:
            return error(404, "image_unavailable", "the indexed image cannot be read on this server")
        self._thumbs.put(key, data)
        return Response(data, media_type="image/png", headers=headers)

    def _thumbnail_png(self, root: Path, src: str, size: int) -> bytes | None:
        import numpy as np
        from PIL import Image

        from ragmed.api import load_image

        try:
            img = load_image(root / src, root=root, max_pixels=self.settings.max_image_pixels)
        except RagmedError as e:
            log.warning("thumbnail failed", extra={"fields": {"error": type(e).__name__}})
            return None
        im = Image.fromarray(np.clip(img.pixels * 255.0, 0, 255).astype("uint8"))
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()
