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


ORTHANC_SAMPLES = ("pydicom-test-files/CT_small.dcm", "pydicom-test-files/MR_small.dcm", "J2KI/RG1_J2KI",
                   "series/dcmqi_ct3slice", "pydicom-test-files/rtplan.dcm")


def orthanc_binary():
    """Orthanc and its DICOMweb plugin (Debian packages orthanc + orthanc-dicomweb, from scripts/install_services.sh);
    skips the calling test, with the reason, when they are absent."""
    import glob
    import shutil as sh

    import pytest

    exe = sh.which("Orthanc")
    plugins = sorted(glob.glob("/usr/share/orthanc/plugins/libOrthancDicomWeb.so*") +
                     glob.glob("/usr/lib/orthanc/libOrthancDicomWeb.so*"))
    if not exe or not plugins:
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (run scripts/install_services.sh: "
                    "apt packages orthanc, orthanc-dicomweb)")
    return exe, plugins[0]


def start_orthanc(workdir: Path):
    """A real Orthanc on 127.0.0.1 (free HTTP port, no DICOM port, storage in ``workdir``); returns (process,
    DICOMweb root URL)."""
    import json
    import subprocess
    import time

    import httpx

    from ragmed.serve.process import free_port

    exe, plugin = orthanc_binary()
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = {"Name": "ragmed-test", "StorageDirectory": str(workdir / "db"), "IndexDirectory": str(workdir / "db"),
           "HttpPort": port, "RemoteAccessAllowed": False,
           "AuthenticationEnabled": False, "DicomServerEnabled": False, "Plugins": [plugin],
           "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
           "OrthancExplorerEnabled": False, "WebDavEnabled": False, "HttpCompressionEnabled": False}
    (workdir / "orthanc.json").write_text(json.dumps(cfg))
    log = open(workdir / "orthanc.log", "wb")
    proc = subprocess.Popen([exe, str(workdir / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
                            cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("Orthanc exited: " + (workdir / "orthanc.log").read_text(errors="replace")[-2000:])
        try:
            if httpx.get(url + "/dicom-web/studies", timeout=1).status_code == 200:
                return proc, url + "/dicom-web"
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("Orthanc did not come up within 60 s")


def fill_orthanc(dicomweb_url: str, data_dir: Path) -> list[Path]:
    """Send the DICOM samples to Orthanc over STOW-RS; returns the files sent."""
    from ragmed.io.dicomweb import DicomWebSource

    files = []
    for rel in ORTHANC_SAMPLES:
        p = data_dir / "dicom" / rel
        files += sorted(p.glob("*.dcm")) if p.is_dir() else [p]
    n = DicomWebSource(dicomweb_url).store_files(files)
    assert n == len(files)
    return files


PACS_REPORTS = {  # reports keyed by StudyInstanceUID (the NEMA / pydicom samples' own study UIDs)
    "1.3.6.1.4.1.5962.1.2.9.20040826185059.5457": "FINDINGS: Frontal chest radiograph. The lungs are clear. No pleural "
                                                  "effusion or pneumothorax. IMPRESSION: Normal chest.",
    "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457": "FINDINGS: MR of the head. No mass or haemorrhage. "
                                                  "IMPRESSION: Normal brain MRI.",
    "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322": "FINDINGS: CT slice with a small right pleural effusion. "
                                                   "IMPRESSION: Pleural effusion.",
    "1.2.392.200103.20080913.113635.0.2009.6.22.21.43.10.22941.1": "FINDINGS: Abdominal CT. Liver and kidneys "
                                                                   "unremarkable. IMPRESSION: Normal abdomen.",
}
CT_SMALL_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
TEST_PIPELINE = ("name: pacs-test\nencoders:\n  text: {name: minilm}\n  image: {name: ragmed-default}\n"
                 "generator: {name: extractive}\n")


def pacs_index(tmp_path_factory, dicomweb_url: str) -> tuple[Path, Path, object]:
    """``ragmed index build --dicomweb URL --reports CSV`` (the real CLI, in-process), once per test run: returns
    (index dir, image folder, the CLI result of the first build)."""
    from click.testing import CliRunner

    from ragmed.cli import main

    base = tmp_path_factory.getbasetemp() / "pacs-shared"
    idx, images = base / "idx", base / "idx-pacs"
    if (idx / "current").exists():
        return idx, images, None
    base.mkdir(parents=True, exist_ok=True)
    (base / "pipeline.yaml").write_text(TEST_PIPELINE)
    with open(base / "reports.csv", "w") as f:
        f.write("StudyInstanceUID,report\n")
        for uid, text in PACS_REPORTS.items():
            f.write(f'{uid},"{text}"\n')
    r = CliRunner().invoke(main, ["index", "build", "--dicomweb", dicomweb_url, "--reports", str(base / "reports.csv"),
                                  "--pipeline", str(base / "pipeline.yaml"), "--out", str(idx), "-q"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return idx, images, r


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width × height and carries only its first 16 rows."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(b"\0" * (width + 1) * 16)) + chunk(b"IEND", b""))
