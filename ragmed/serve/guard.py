"""The service's outermost ASGI layer: request ids, authentication, admission to the bounded work queue, request-body
limits enforced while the body streams in, slow-client timeouts, and one structured log line per request.

It is plain ASGI (no Starlette middleware class) so that it sees the raw header bytes (a non-ASCII ``Authorization``
value is compared as bytes, never decoded) and every response, including the ones it answers itself, in the
documented ``{"error": {"type", "message"}}`` shape.

Written by hand: Starlette's ``RequestBodyLimitMiddleware`` limits the body size but has no read timeouts and answers
in plain text on some paths; uvicorn's ``limit_concurrency`` refuses connections, not queued work.
"""
from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("ragmed.serve")
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("ragmed_request_id", default="-")

_RID_OK = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class BodyError(Exception):
    """Raised from ``receive`` when the body breaks a limit; the guard answers instead of the app."""

    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message


def error_body(type_: str, message: str) -> bytes:
    return json.dumps({"error": {"type": type_, "message": message}}).encode()


async def send_error(send, status: int, type_: str, message: str, rid: str, headers: list | None = None) -> None:
    body = error_body(type_, message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"x-request-id", rid.encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def key_digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


@dataclass
class GuardConfig:
    api_keys: tuple[str, ...] = ()  # empty: no authentication (only allowed on loopback; see ragmed.serve.api)
    max_body_bytes: int = 64 << 20
    chunk_timeout_s: float = 10.0  # longest wait for the next piece of a body
    body_timeout_s: float = 60.0  # the whole body must arrive within this
    public_prefixes: tuple[str, ...] = ("/health", "/readyz", "/viewer", "/cds-services")
    queued_prefixes: tuple[str, ...] = ("/v1/ask", "/v1/retrieve", "/cds-services/")
    capacity: int = 18  # work slots: running + waiting requests
    retry_after_s: int = 2
    signed_ok: Callable[[str, bytes], bool] | None = None  # a signed, expiring link (CDS card thumbnails)
    digests: list[bytes] = field(default_factory=list)

    def __post_init__(self):
        self.digests = [key_digest(b"Bearer " + k.encode()) for k in self.api_keys]


class Admission:
    """Counts admitted requests (event-loop side, so no lock): the work queue's capacity and depth."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.admitted = 0
        self.running = 0  # updated by the worker threads (ints; read for the gauge only)

    def try_enter(self) -> bool:
        if self.admitted >= self.capacity:
            return False
        self.admitted += 1
        return True

    def leave(self) -> None:
        self.admitted -= 1

    @property
    def waiting(self) -> int:
        return max(0, self.admitted - self.running)


class Guard:
    def __init__(self, app, cfg: GuardConfig, admission: Admission, metrics=None):
        self.app, self.cfg, self.admission, self.metrics = app, cfg, admission, metrics

    def authorised(self, headers: list[tuple[bytes, bytes]]) -> bool:
        got = b""
        for k, v in headers:
            if k.lower() == b"authorization":
                got = v
                break
        d = key_digest(got)
        ok = False
        for want in self.cfg.digests:  # every key compared, in constant time, whatever matches
            ok |= hmac.compare_digest(d, want)
        return ok

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        headers = scope.get("headers", [])
        rid = ""
        for k, v in headers:
            if k == b"x-request-id":
                try:
                    rid = v.decode("ascii")
                except UnicodeDecodeError:
                    rid = ""
                break
        if not _RID_OK.match(rid):
            rid = secrets.token_hex(8)
        token = request_id.set(rid)
        path = scope.get("path", "")
        status_box = {"status": 0, "error": None}
        admitted = False

        async def send_wrapped(msg):
            if msg["type"] == "http.response.start":
                status_box["status"] = msg["status"]
                msg = dict(msg)
                msg["headers"] = [*msg.get("headers", []), (b"x-request-id", rid.encode())]
            await send(msg)

        try:
            if (self.cfg.digests and not path.startswith(self.cfg.public_prefixes) and not self.authorised(headers)
                    and not (self.cfg.signed_ok and self.cfg.signed_ok(path, scope.get("query_string", b"")))):
                status_box["error"] = "authentication_error"
                return await send_error(send_wrapped, 401, "authentication_error",
                                        "missing or invalid API key (send 'Authorization: Bearer KEY')", rid,
                                        [(b"www-authenticate", b"Bearer")])
            if scope.get("method") == "POST" and path.startswith(self.cfg.queued_prefixes):
                if not self.admission.try_enter():
                    status_box["error"] = "queue_full"
                    if self.metrics is not None:
                        self.metrics.rejected.labels("queue_full").inc()
                    return await send_error(send_wrapped, 503, "overloaded",
                                            "the service is at capacity; retry after the delay in Retry-After", rid,
                                            [(b"retry-after", str(self.cfg.retry_after_s).encode())])
                admitted = True
            length = None
            for k, v in headers:
                if k == b"content-length":
                    try:
                        length = int(v)
                    except ValueError:
                        status_box["error"] = "invalid_request"
                        return await send_error(send_wrapped, 400, "invalid_request", "invalid Content-Length", rid)
            if length is not None and length > self.cfg.max_body_bytes:
                status_box["error"] = "upload_too_large"
                return await send_error(send_wrapped, 413, "upload_too_large", self._too_large(), rid,
                                        [(b"connection", b"close")])
            await self._run_limited(scope, receive, send_wrapped, rid, status_box)
        finally:
            if admitted:
                self.admission.leave()
            ms = (time.perf_counter() - t0) * 1000
            route = scope.get("route")
            route_path = getattr(route, "path", None) or _coarse(path)
            if self.metrics is not None:
                self.metrics.observe(route_path, scope.get("method", ""), status_box["status"], ms / 1000,
                                     status_box["error"])
            log.info("request", extra={"fields": {"method": scope.get("method"), "route": route_path,
                                                  "status": status_box["status"], "ms": round(ms, 1),
                                                  **({"error": status_box["error"]} if status_box["error"] else {})}})
            request_id.reset(token)

    def _too_large(self) -> str:
        return f"the request body is larger than {self.cfg.max_body_bytes / (1 << 20):g} MB"

    async def _run_limited(self, scope, receive, send, rid, status_box):
        cfg = self.cfg
        state = {"received": 0, "done": False, "error": None, "started": False, "replaced": False}
        deadline = time.monotonic() + cfg.body_timeout_s

        async def receive_limited():
            if state["error"] is not None:
                raise state["error"]
            if state["done"]:
                return await receive()
            timeout = min(cfg.chunk_timeout_s, deadline - time.monotonic())
            try:
                if timeout <= 0:
                    raise asyncio.TimeoutError
                msg = await asyncio.wait_for(receive(), timeout)
            except asyncio.TimeoutError:
                state["error"] = BodyError(408, "request_timeout", "the request body did not arrive in time")
                raise state["error"] from None
            if msg["type"] == "http.request":
                state["received"] += len(msg.get("body", b""))
                if state["received"] > cfg.max_body_bytes:
                    state["error"] = BodyError(413, "upload_too_large", self._too_large())
                    raise state["error"]
                if not msg.get("more_body", False):
                    state["done"] = True
            else:
                state["done"] = True
            return msg

        async def send_checked(msg):
            if state["error"] is not None:  # the app answered its own parse error: answer the real one instead
                if msg["type"] == "http.response.start" and not state["replaced"]:
                    state["replaced"] = True
                    e = state["error"]
                    status_box["error"] = e.type
                    await send_error(send, e.status, e.type, e.message, rid, [(b"connection", b"close")])
                return
            if msg["type"] == "http.response.start":
                state["started"] = True
            await send(msg)

        try:
            await self.app(scope, receive_limited, send_checked)
        except BodyError as e:
            if not state["started"] and not state["replaced"]:
                status_box["error"] = e.type
                await send_error(send, e.status, e.type, e.message, rid, [(b"connection", b"close")])


def _coarse(path: str) -> str:
    """A path for logs and metric labels without ids (unmatched routes: the first segment only)."""
    parts = [p for p in path.split("/") if p]
    return "/" + parts[0] if parts else "/"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request id, event and the fields given with ``extra``.
    Callers log no identifiers: no questions, file names, client addresses or patient data."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
               "request_id": request_id.get(), "event": record.getMessage()}
        out.update(getattr(record, "fields", {}) or {})
        if record.exc_info and record.exc_info[0] is not None:
            out["exception"] = record.exc_info[0].__name__
        return json.dumps(out, default=str)


def configure_logging(level: str = "info") -> None:
    """Structured logs on stderr for the service's loggers (called by ``run``, never at import)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    for name in ("ragmed.serve", "ragmed"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler] if name == "ragmed.serve" else lg.handlers
    lg = logging.getLogger("ragmed.serve")
    lg.setLevel(level.upper())
    lg.propagate = False


def header_timeout_protocol(timeout_s: float):
    """uvicorn's h11 protocol with a deadline for the request line and headers: a connection that opens and sends
    nothing, or part of the headers, is closed after ``timeout_s`` (uvicorn itself only times out idle keep-alive
    connections). Bodies are timed by :class:`Guard`."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11Protocol(H11Protocol):
        _hdr_since: float | None = None

        def _active(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def connection_made(self, transport):
            super().connection_made(transport)
            self._hdr_since = self.loop.time()
            self.loop.call_later(timeout_s, self._hdr_check)

        def data_received(self, data: bytes) -> None:
            if self._hdr_since is None and not self._active():
                self._hdr_since = self.loop.time()
                self.loop.call_later(timeout_s, self._hdr_check)
            super().data_received(data)
            if self._active():
                self._hdr_since = None

        def _hdr_check(self) -> None:
            if self._hdr_since is None or self._active() or self.transport.is_closing():
                return
            left = self._hdr_since + timeout_s - self.loop.time()
            if left > 0.01:
                self.loop.call_later(left, self._hdr_check)
                return
            log.info("connection closed: request headers incomplete", extra={"fields": {"after_s": timeout_s}})
            self.transport.close()

    return HeaderTimeoutH11Protocol
