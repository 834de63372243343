"""Helpers for the service tests: one small real index per test run (MiniLM + the shipped image tower + FAISS,
extractive answerer), built once and copied per module, and raw-socket HTTP for hostile clients."""
from __future__ import annotations

import shutil
import socket
from pathlib import Path

API_KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def build_index(corpus_dir: Path, out: Path, text_encoder, n: int = 12) -> Path:
    from ragmed.config import PipelineConfig
    from ragmed.corpus import read_corpus
    from ragmed.pipeline.build import build_from_config
    from tests.corpus_utils import png_corpus

    cfg = PipelineConfig.from_dict({"name": "serve-test",
                                    "encoders": {"text": {"name": "minilm"}, "image": {"name": "ragmed-default"}},
                                    "generator": {"name": "extractive"}})
    manifest = corpus_dir / f"manifest-0-{n}.csv"
    if not manifest.exists():
        manifest = png_corpus(corpus_dir, n)
    build_from_config(read_corpus(manifest), out, cfg, text_encoder=text_encoder, progress=False)
    return out


def shared_index(tmp_path_factory, text_encoder, name: str) -> tuple[Path, Path]:
    """(corpus dir, a private copy of the test run's index): the index is built once per run."""
    base = tmp_path_factory.getbasetemp() / "serve-shared"
    corpus, idx = base / "corpus", base / "idx"
    if not (idx / "current").exists():
        build_index(corpus, idx, text_encoder)
    mine = tmp_path_factory.mktemp(name) / "idx"
    shutil.copytree(idx, mine, symlinks=True)
    return corpus, mine


def raw_request(port: int, head: bytes, body_chunks=(), *, read_timeout: float = 30.0) -> tuple[int, bytes, int]:
    """Send a raw HTTP request (head, then body chunks until the server answers or closes); returns
    (status, response bytes, body bytes sent)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
    sent = 0
    try:
        s.sendall(head)
        for chunk in body_chunks:
            try:
                s.sendall(chunk)
                sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            s.settimeout(0.0)
            try:
                peek = s.recv(1, socket.MSG_PEEK)
                if peek:
                    break  # the server has answered
            except (BlockingIOError, InterruptedError):
                pass
            except ConnectionResetError:
                break
            finally:
                s.settimeout(read_timeout)
        data = b""
        while True:
            try:
                piece = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not piece:
                break
            data += piece
            if b"\r\n\r\n" in data and _complete(data):
                break
    finally:
        s.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data, sent


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def png_bomb(width: int, height: int) -> bytes:
    """A valid 8-bit grayscale PNG of width × height zero pixels, written row by row (small file, huge image)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
