"""Decode compressed DICOM pixel data in a separate worker process.

The JPEG / JPEG-LS / JPEG 2000 / RLE decoders behind pydicom are C/C++/Rust libraries fed with untrusted bytes: a
corrupt codestream can make one crash the interpreter, spin, or allocate far more than the DICOM header declares (a
JPEG 2000 SIZ marker names its own image size). ``ragmed.io`` therefore hands compressed frames to a long-lived worker
process (started on first use, reused for every later image) that runs under an address-space limit; the parent waits
with a timeout. A worker that dies or times out is discarded and replaced on the next call, and the caller gets a typed
:class:`~ragmed.errors.DecodeError` instead of a crash, a hang or an out-of-memory kill.

Wire format (both directions over the worker's stdin / stdout, nothing pickled): an 8-byte big-endian length, then a
JSON header; a reply with ``"nbytes"`` is followed by that many raw array bytes (C order, ``dtype`` / ``shape`` in the
header). The worker never writes anything else to stdout, and its stderr goes to ``/dev/null`` (pydicom's warnings
can quote header values).

Settings (environment): ``RAGMED_DECODE_TIMEOUT`` seconds per frame (default 60), ``RAGMED_DECODE_MEMORY_MB`` address
space of the worker (default 4096). Only POSIX systems isolate; elsewhere decoding stays in-process.
"""
from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import threading
import time

import numpy as np

from ragmed.settings import DEFAULT_DECODE_MEMORY_MB as DEFAULT_MEMORY_MB  # noqa: F401 - old names
from ragmed.settings import DEFAULT_DECODE_TIMEOUT_S as DEFAULT_TIMEOUT_S  # noqa: F401

_LEN = struct.Struct(">Q")
MAX_HEADER = 1 << 20


class WorkerFailure(Exception):
    """The worker crashed, hung, or broke the protocol. ``kind`` is 'crash' | 'timeout' | 'protocol'."""

    def __init__(self, kind: str, detail: str = ""):
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}" if detail else kind)


class WorkerError(Exception):
    """The worker caught an exception while decoding. ``category`` is ragmed's safe classification."""

    def __init__(self, category: str, exc_type: str):
        self.category = category
        self.exc_type = exc_type
        super().__init__(f"{category} ({exc_type})")


def available() -> bool:
    return os.name == "posix"


def timeout_s() -> float:
    from ragmed.settings import settings

    return settings().decode_timeout_s


def memory_mb() -> int:
    from ragmed.settings import settings

    return settings().decode_memory_mb


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ)
        # One thread each: the worker decodes one frame at a time, and BLAS thread pools reserve address space.
        for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[k] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, _package_parent(), str(memory_mb())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
            env=env,
        )
        self.owner = os.getpid()  # a forked child must not talk to its parent's worker

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except Exception:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except Exception:
                pass

    def call(self, request: dict, timeout: float) -> tuple[dict, bytes]:
        deadline = time.monotonic() + timeout
        payload = json.dumps(request).encode()
        try:
            self.proc.stdin.write(_LEN.pack(len(payload)) + payload)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as e:
            raise WorkerFailure("crash", "worker not accepting requests") from e
        fd = self.proc.stdout.fileno()
        (n,) = _LEN.unpack(_read_exact(fd, _LEN.size, deadline, self.proc))
        if n > MAX_HEADER:
            raise WorkerFailure("protocol", "oversized reply header")
        header = json.loads(_read_exact(fd, n, deadline, self.proc))
        body = b""
        if header.get("nbytes"):
            body = _read_exact(fd, int(header["nbytes"]), deadline, self.proc)
        return header, body


_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); import ragmed.io._isolate as w; w._serve()"


def _package_parent() -> str:
    # this file is ragmed/io/_isolate.py: the directory holding the ragmed package is three levels up
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read_exact(fd: int, n: int, deadline: float, proc: subprocess.Popen) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WorkerFailure("timeout")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            raise WorkerFailure("timeout")
        chunk = os.read(fd, min(n - got, 1 << 22))
        if not chunk:
            code = proc.poll()
            if code is None:
                try:
                    code = proc.wait(timeout=2)
                except Exception:
                    code = None
            raise WorkerFailure("crash", _exit_text(code))
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "worker closed its output"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


_idle: list[_Worker] = []
_lock = threading.Lock()


def _acquire() -> _Worker:
    with _lock:
        while _idle:
            w = _idle.pop()
            if w.owner != os.getpid():  # inherited through fork(): the parent's, leave it alone
                _idle.clear()
                break
            if w.alive():
                return w
            w.kill()
    return _Worker()


def _release(w: _Worker) -> None:
    with _lock:
        _idle.append(w)


def shutdown() -> None:
    """Stop every idle worker (also registered with ``atexit``)."""
    with _lock:
        workers = [w for w in _idle if w.owner == os.getpid()]
        _idle.clear()
    for w in workers:
        w.kill()


import atexit  # noqa: E402

atexit.register(shutdown)


def decode_frame(path: str, index: int | None, *, timeout: float | None = None) -> np.ndarray:
    """Decode frame ``index`` (None: the whole single-frame image) of the DICOM file at ``path`` in a worker.

    Raises :class:`WorkerError` for a decoder exception and :class:`WorkerFailure` for a crash / timeout.
    """
    w = _acquire()
    ok = False
    try:
        header, body = w.call({"path": path, "index": index}, timeout if timeout is not None else timeout_s())
        ok = True
    finally:
        if ok:
            _release(w)
        else:
            w.kill()
    if header.get("status") == "ok":
        try:
            dtype = np.dtype(header["dtype"])
            shape = tuple(int(s) for s in header["shape"])
            arr = np.frombuffer(body, dtype=dtype).reshape(shape)
        except (KeyError, TypeError, ValueError) as e:
            raise WorkerFailure("protocol", "malformed array reply") from e
        return arr
    raise WorkerError(str(header.get("category", "decode")), str(header.get("exc_type", "Exception")))


# ----------------------------------------------------------------------------------------------- worker side


def _serve() -> None:  # pragma: no cover - runs in the child process
    import resource
    import warnings

    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.CRITICAL)
    try:
        limit = int(sys.argv[2]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (IndexError, ValueError, OSError):
        pass
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints go to /dev/null, never into the protocol
    inp = sys.stdin.buffer
    import pydicom
    from pydicom.pixels import pixel_array

    from ragmed.io.decode_errors import classify_decode_error

    while True:
        head = inp.read(_LEN.size)
        if len(head) < _LEN.size:
            return
        (n,) = _LEN.unpack(head)
        req = json.loads(inp.read(n))
        try:
            ds = pydicom.dcmread(req["path"], force=True)
            index = req.get("index")
            arr = pixel_array(ds, index=index) if index is not None else ds.pixel_array
            arr = np.ascontiguousarray(arr)
            reply = {"status": "ok", "dtype": arr.dtype.str, "shape": list(arr.shape), "nbytes": arr.nbytes}
            data = arr.tobytes()
        except BaseException as e:  # noqa: BLE001 - every failure becomes a classified reply
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            reply = {"status": "error", "category": classify_decode_error(e), "exc_type": type(e).__name__}
            data = b""
        payload = json.dumps(reply).encode()
        out.write(_LEN.pack(len(payload)) + payload)
        if data:
            out.write(data)
        out.flush()
