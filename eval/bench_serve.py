"""``ragmed serve api`` under load and under hostile input, on loopback.

    python eval/bench_serve.py --clients 50 --seconds 60            # load: /v1/retrieve then /v1/ask
    python eval/bench_serve.py --hostile-only                       # hostile inputs only

The service runs as a child process (``ragmed.serve.process.start_server``) over an index of VQA-RAD images (the
first ``--images`` images with their question–answer pairs as report text; MiniLM + the shipped image tower + FAISS,
extractive answerer), with its defaults: 2 workers, a queue of 16, auth on. Load: ``--clients`` concurrent clients
(asyncio + httpx), each uploading a VQA-RAD image with a question, back to back for ``--seconds`` per endpoint, after ``--warmup-seconds`` of the same load (not counted).
Reported per endpoint: status counts (zero 500s is the target), the 503 share (answered with Retry-After), p50 / p95
/ p99 latency of accepted (200) requests, throughput, and the server's RSS after warm-up and at the end (target:
end ≤ 1.1 × start). Hostile: truncated DICOM, random bytes, a PNG declaring 50000×50000, a 200 MB body (declared and
chunked), malformed multipart, a 100k-character question, a non-ASCII Authorization header, a slow client; each must
get a 4xx JSON error, and the server must keep answering. Results: ``eval/results/bench_serve.json``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import struct
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from ragmed.eval.bench import table, write_result  # noqa: E402

DATA = Path(os.environ.get("RAGMED_DATA", REPO.parent / "shared" / "data"))
KEY = "bench-key-" + "0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
PIPELINE = ("name: bench-serve\nencoders:\n  text: {name: minilm}\n  image: {name: ragmed-default}\n"
            "index: {fit_image_encoder: false}\ngenerator: {name: extractive}\n")


def build_index(work: Path, n_images: int) -> tuple[Path, list[dict]]:
    from ragmed.config import PipelineConfig
    from ragmed.corpus import read_corpus
    from ragmed.pipeline.build import build_from_config

    import yaml

    qa = json.loads((DATA / "vqa-rad" / "train.json").read_text())
    names = list(dict.fromkeys(q["image_name"] for q in qa))[:n_images]
    keep = set(names)
    subset = [q for q in qa if q["image_name"] in keep]
    (work / "vqa.json").write_text(json.dumps(subset))
    idx = work / "idx"
    if not (idx / "current").exists():
        cfg = PipelineConfig.from_dict(yaml.safe_load(PIPELINE))
        corpus = read_corpus(work / "vqa.json", format="vqa-rad", images=DATA / "vqa-rad" / "images")
        build_from_config(corpus, idx, cfg, progress=False)
    return idx, subset


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def load(url: str, endpoint: str, items: list[dict], clients: int, seconds: float) -> dict:
    import httpx

    lat: list[float] = []
    codes: dict[str, int] = {}
    retry_after_missing = 0
    images = {}
    for it in items:
        p = DATA / "vqa-rad" / "images" / it["image_name"]
        images[it["image_name"]] = p.read_bytes()
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 5, max_keepalive_connections=clients + 5)

    async def client(i: int, http):
        nonlocal retry_after_missing
        rng = random.Random(i)
        while time.monotonic() < deadline:
            it = rng.choice(items)
            t = time.perf_counter()
            try:
                r = await http.post(url + endpoint, headers=AUTH, data={"question": it["question"]},
                                    files={"image": ("x.jpg", images[it["image_name"]], "image/jpeg")}, timeout=120)
                code = str(r.status_code)
                if r.status_code == 503:
                    if "retry-after" not in r.headers:
                        retry_after_missing += 1
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")) * rng.uniform(0.5, 1.0))
            except httpx.HTTPError as e:
                code = type(e).__name__
            dt = time.perf_counter() - t
            codes[code] = codes.get(code, 0) + 1
            if code == "200":
                lat.append(dt)

    async with httpx.AsyncClient(limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    total = sum(codes.values())
    return {"endpoint": endpoint, "clients": clients, "seconds": seconds, "requests": total, "status": codes,
            "ok": codes.get("200", 0), "share_503": round(codes.get("503", 0) / max(1, total), 4),
            "errors_5xx_other_than_503": sum(v for k, v in codes.items() if k.startswith("5") and k != "503"),
            "retry_after_missing": retry_after_missing,
            "throughput_ok_per_s": round(codes.get("200", 0) / seconds, 2),
            "latency_ok_ms": pct(lat)}


def pct(samples_s: list[float]) -> dict[str, float]:
    import numpy as np

    if not samples_s:
        return {"n": 0}
    a = np.asarray(samples_s) * 1000
    return {"n": len(a), "p50": round(float(np.percentile(a, 50)), 1), "p95": round(float(np.percentile(a, 95)), 1),
            "p99": round(float(np.percentile(a, 99)), 1), "mean": round(float(a.mean()), 1),
            "max": round(float(a.max()), 1)}


def png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    idat = zlib.compress(b"\0" * (width + 1) * 16)  # the first 16 rows; the header declares them all
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def raw(port: int, head: bytes, chunks=(), timeout: float = 60) -> tuple[int, bytes, int]:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sent = 0
    try:
        s.sendall(head)
        for c in chunks:
            try:
                s.sendall(c)
                sent += len(c)
            except OSError:
                break
            s.setblocking(False)
            try:
                if s.recv(1, socket.MSG_PEEK):
                    break
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                break
            finally:
                s.setblocking(True)
                s.settimeout(timeout)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 10:
            try:
                piece = s.recv(65536)
            except OSError:
                break
            if not piece:
                break
            data += piece
    finally:
        s.close()
    return (int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0), data, sent


def hostile(url: str, port: int, sample_image: bytes) -> list[dict]:
    import httpx

    rows = []

    def rec(name, status, body, extra=None):
        try:
            err = json.loads(body.split(b"\r\n\r\n", 1)[1] if body.startswith(b"HTTP/") else body)["error"]
        except (ValueError, KeyError, IndexError, TypeError):
            err = None
        rows.append({"input": name, "status": status, "error_type": err.get("type") if err else None,
                     "json_error": err is not None, **(extra or {})})

    def post(name, **kw):
        t = time.perf_counter()
        r = httpx.post(url + "/v1/ask", timeout=120, **kw)
        rec(name, r.status_code, r.content, {"seconds": round(time.perf_counter() - t, 3)})

    truncated = (DATA / "dicom" / "pydicom-test-files" / "MR_truncated.dcm").read_bytes()
    post("truncated DICOM", headers=AUTH, data={"question": "q?"}, files={"image": ("a.dcm", truncated, "application/dicom")})
    post("random bytes", headers=AUTH, data={"question": "q?"}, files={"image": ("a.bin", os.urandom(50_000), "image/png")})
    post("PNG declaring 50000x50000", headers=AUTH, data={"question": "q?"},
         files={"image": ("a.png", png_declaring(50000, 50000), "image/png")})
    post("100k-character question", headers=AUTH, data={"question": "x" * 100_000})
    post("malformed multipart", headers={**AUTH, "Content-Type": "multipart/form-data; boundary=B"},
         content=b"--B\r\nContent-Disposition: form-data; name=\"question\"\r\n\r\nhi\r\n--X")
    post("multipart without boundary", headers={**AUTH, "Content-Type": "multipart/form-data"}, content=b"junk")
    post("non-ASCII Authorization", headers={"Authorization": b"Bearer \xff\xfe"}, data={"question": "q?"})
    head = (f"POST /v1/ask HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {200 << 20}\r\n\r\n").encode()
    t = time.perf_counter()
    st, body, sent = raw(port, head, (b"\0" * 65536 for _ in range(3200)))
    rec("200 MB body (Content-Length)", st, body, {"body_bytes_sent": sent, "seconds": round(time.perf_counter() - t, 3)})
    head = (f"POST /v1/ask HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: multipart/form-data; boundary=B\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    first = b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.dcm\"\r\n\r\n"
    parts = (first + b"\0" * 65536 if i == 0 else b"\0" * 65536 for i in range(3200))  # one 200 MB file part
    t = time.perf_counter()
    st, body, sent = raw(port, head, (b"%x\r\n" % len(p) + p + b"\r\n" for p in parts))
    rec("200 MB body (chunked)", st, body, {"body_bytes_sent": sent, "seconds": round(time.perf_counter() - t, 3)})
    head = (f"POST /v1/ask HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 5000\r\n\r\n").encode()
    t = time.perf_counter()
    st, body, _ = raw(port, head, [b"--B\r\n"], timeout=120)
    rec("slow client (stalls mid-body)", st, body, {"seconds": round(time.perf_counter() - t, 3)})
    r = httpx.post(url + "/v1/ask", headers=AUTH, data={"question": "Is there a pleural effusion?"},
                   files={"image": ("a.jpg", sample_image, "image/jpeg")}, timeout=120)
    rows.append({"input": "a normal request afterwards", "status": r.status_code, "json_error": False,
                 "error_type": None})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--images", type=int, default=120, help="VQA-RAD images in the index")
    ap.add_argument("--endpoints", default="/v1/retrieve,/v1/ask")
    ap.add_argument("--warmup-seconds", type=float, default=20,
                    help="load on each endpoint before the start memory is taken (not counted)")
    ap.add_argument("--hostile-only", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--queue", type=int, default=16)
    ap.add_argument("--work", default=None, help="work directory (kept; the index is reused)")
    ap.add_argument("--name", default="bench_serve")
    args = ap.parse_args()

    from ragmed.serve.process import start_server, stop_server

    work = Path(args.work or tempfile.mkdtemp(prefix="ragmed-bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    idx, items = build_index(work, args.images)
    build_s = round(time.perf_counter() - t, 1)
    proc, url = start_server("api", ["--index", str(idx), "--workers", str(args.workers), "--queue", str(args.queue)],
                             env={"RAGMED_API_KEYS": KEY}, timeout=300)
    port = int(url.rsplit(":", 1)[1])
    out: dict = {"index": {"images": args.images, "qa_pairs": len(items), "build_s": build_s},
                 "server": {"workers": args.workers, "queue": args.queue, "generator": "extractive",
                            "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX")},
                 "loadavg_before": os.getloadavg()}
    try:
        sample = (DATA / "vqa-rad" / "images" / items[0]["image_name"]).read_bytes()
        import httpx

        for it in items[:10]:  # warm-up
            httpx.post(url + "/v1/ask", headers=AUTH, data={"question": it["question"]},
                       files={"image": ("x.jpg", sample, "image/jpeg")}, timeout=120)
        endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
        out["rss_mb_before_warmup_load"] = rss_mb(proc.pid)
        if not args.hostile_only and args.warmup_seconds > 0:
            for ep in endpoints:
                asyncio.run(load(url, ep, items, args.clients, args.warmup_seconds))
        rss_start = rss_mb(proc.pid)
        out["rss_mb_after_warmup"] = rss_start
        out["warmup_seconds_per_endpoint"] = args.warmup_seconds
        runs = []
        samples: list[tuple[float, float]] = []
        stop_sampling = threading.Event()
        t_start = time.monotonic()

        def sampler():
            while not stop_sampling.wait(5.0):
                samples.append((round(time.monotonic() - t_start, 1), rss_mb(proc.pid)))

        threading.Thread(target=sampler, daemon=True).start()
        if not args.hostile_only:
            for ep in endpoints:
                res = asyncio.run(load(url, ep, items, args.clients, args.seconds))
                res["rss_mb_end"] = rss_mb(proc.pid)
                runs.append(res)
                print(f"{ep}: {res['requests']} requests, status {res['status']}, 503 share {res['share_503']}, "
                      f"p50/p95/p99 ms {res['latency_ok_ms']}, rss {res['rss_mb_end']} MB", flush=True)
        out["load"] = runs
        stop_sampling.set()
        out["rss_mb_series"] = samples
        out["rss_mb_end"] = rss_mb(proc.pid)
        out["rss_end_over_start"] = round(out["rss_mb_end"] / rss_start, 3) if rss_start else None
        rss_h = rss_mb(proc.pid)
        hrows = hostile(url, port, sample)
        out["hostile"] = hrows
        out["hostile_rss_mb_before_after"] = [rss_h, rss_mb(proc.pid)]
        out["hostile_all_4xx_json"] = all(400 <= r["status"] < 500 and r["json_error"] for r in hrows[:-1])
        out["hostile_server_still_serving"] = hrows[-1]["status"] == 200
        print(table(hrows, ["input", "status", "error_type", "json_error", "seconds", "body_bytes_sent"]))
        m = httpx.get(url + "/metrics", headers=AUTH).text
        out["metrics_sample"] = [ln for ln in m.splitlines() if ln.startswith(("ragmed_rejected_total",
                                                                               "ragmed_errors_total"))][:20]
    finally:
        out["server_exit"] = stop_server(proc)
    out["loadavg_after"] = os.getloadavg()
    p = write_result(args.name, out)
    print("wrote", p.relative_to(REPO))


if __name__ == "__main__":
    main()
