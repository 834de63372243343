"""The hardening of ``ragmed serve api``, each finding of issue 15 reproduced against the real server on 127.0.0.1:
authentication by default (no key, wrong key, non-ASCII header), docs behind the key and served without a CDN, the
error shape of FastAPI's own 404 / 405 / 400 and of multipart errors, request ids, /readyz, /metrics, the bounded
queue (503 + Retry-After), the body limit enforced while the body streams in, slow clients (408), a small PNG that
declares 11000×11000 pixels, a 100k-character question, opaque image ids and thumbnails, structured logs without
identifiers, an index rebuilt under the running service without a failed request, and a graceful shutdown."""
from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from tests.serve_utils import API_KEY, AUTH, png_bomb, raw_request, rss_mb, shared_index

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

QUESTION = "Is there a pleural effusion?"


@pytest.fixture(scope="module")
def server(tmp_path_factory, text_encoder):
    from ragmed.serve.process import start_server, stop_server

    corpus, idx = shared_index(tmp_path_factory, text_encoder, "hardening")
    proc, url = start_server("api", ["--index", str(idx), "--api-key-env", "RAGMED_TEST_KEYS", "--max-upload-mb", "1",
                                     "--workers", "1", "--queue", "1", "--body-timeout", "2",
                                     "--corpus-root", str(corpus), "--max-question-chars", "1000"],
                             env={"RAGMED_TEST_KEYS": API_KEY}, timeout=180)
    port = int(url.rsplit(":", 1)[1])
    yield {"url": url, "port": port, "proc": proc, "corpus": corpus, "idx": idx}
    stop_server(proc)  # also removes its log file (a no-op signal if the shutdown test already stopped it)


def ask(url, question=QUESTION, files=None, headers=AUTH, **data):
    return httpx.post(url + "/v1/ask", headers=headers, data={"question": question, **data}, files=files, timeout=60)


def assert_error(r, status, type_=None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    if type_:
        assert body["error"]["type"] == type_, body
    assert r.headers.get("x-request-id")
    return body["error"]


def test_authentication_is_on_by_default(server):
    url = server["url"]
    assert_error(httpx.post(url + "/v1/ask", data={"question": QUESTION}), 401, "authentication_error")
    assert_error(ask(url, headers={"Authorization": "Bearer wrong-key-0123456789"}), 401, "authentication_error")
    # a non-ASCII byte in the header: a JSON 401, not a plain-text 500 with a traceback
    assert_error(ask(url, headers={"Authorization": b"Bearer \xff\xfe-caf\xe9"}), 401, "authentication_error")
    for path in ("/metrics", "/openapi.json", "/docs", "/v1/cases/x/images/y/thumbnail"):
        assert_error(httpx.get(url + path), 401)
    assert httpx.get(url + "/health").status_code == 200  # liveness and readiness stay open for the orchestrator
    assert httpx.get(url + "/readyz").status_code == 200


def test_no_auth_only_when_asked_and_only_on_loopback(monkeypatch):
    from click.testing import CliRunner

    from ragmed.cli import main

    monkeypatch.delenv("RAGMED_API_KEYS", raising=False)
    r = CliRunner().invoke(main, ["serve", "api", "--index", "nowhere"])
    assert r.exit_code != 0 and "no API key configured" in r.output
    r = CliRunner().invoke(main, ["serve", "api", "--index", "nowhere", "--no-auth", "--host", "0.0.0.0"])
    assert r.exit_code != 0 and "only allowed on a loopback address" in r.output
    monkeypatch.setenv("RAGMED_API_KEYS", "short")
    r = CliRunner().invoke(main, ["serve", "api", "--index", "nowhere"])
    assert r.exit_code != 0 and "at least 16" in r.output


def test_docs_and_openapi_behind_the_key_without_a_cdn(server):
    url = server["url"]
    spec = httpx.get(url + "/openapi.json", headers=AUTH).json()
    for path in ("/v1/ask", "/v1/retrieve", "/health", "/readyz", "/metrics", "/viewer",
                 "/v1/cases/{case_id}/images/{image_ref}/thumbnail"):
        assert path in spec["paths"], path
    html = httpx.get(url + "/docs", headers=AUTH).text
    assert "/docs/static/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
    assert "https://" not in html.split("<body>")[0]
    js = httpx.get(url + "/docs/static/swagger-ui-bundle.js", headers=AUTH)
    assert js.status_code == 200 and len(js.content) > 100_000


def test_every_error_has_the_documented_shape(server):
    url, port = server["url"], server["port"]
    assert_error(httpx.get(url + "/nope", headers=AUTH), 404, "not_found")
    assert_error(httpx.get(url + "/v1/ask", headers=AUTH), 405, "method_not_allowed")
    assert_error(ask(url, k="not-a-number"), 400, "invalid_request")
    assert_error(httpx.post(url + "/v1/ask", headers=AUTH, data={}), 400, "invalid_request")
    # a multipart body that is not one: FastAPI's parser error, in our shape
    r = httpx.post(url + "/v1/ask", headers={**AUTH, "Content-Type": "multipart/form-data; boundary=XYZ"},
                   content=b"--XYZ\r\nContent-Disposition: form-data; name=\"question\"\r\n\r\nhi\r\n--XY")
    assert_error(r, 400)
    r = httpx.post(url + "/v1/ask", headers={**AUTH, "Content-Type": "multipart/form-data"}, content=b"garbage")
    assert_error(r, 400)
    status, data, _ = raw_request(port, f"POST /v1/ask HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                                        "Content-Length: abc\r\n\r\n".encode())
    assert status == 400, data  # uvicorn's own parser refuses it before the app


def test_request_ids_readiness_and_metrics(server):
    url = server["url"]
    r = httpx.get(url + "/health")
    assert len(r.headers["x-request-id"]) >= 8
    r = httpx.get(url + "/readyz", headers={"X-Request-ID": "trace-abc.123"})
    assert r.headers["x-request-id"] == "trace-abc.123" and r.json()["status"] == "ready"
    r = httpx.get(url + "/readyz", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces"
    assert ask(url).status_code == 200
    m = httpx.get(url + "/metrics", headers=AUTH)
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    text = m.text
    for name in ("ragmed_requests_total", "ragmed_request_seconds_bucket", "ragmed_errors_total",
                 "ragmed_queue_depth", "ragmed_evidence_items_count"):
        assert name in text, name
    assert 'ragmed_requests_total{method="POST",route="/v1/ask",status="200"}' in text
    assert 'ragmed_errors_total{type="authentication_error"}' in text


def test_question_length_is_limited(server):
    t = time.perf_counter()
    err = assert_error(ask(server["url"], question="is there an effusion " * 5000), 400, "invalid_question")
    assert "limit is 1000" in err["message"] and time.perf_counter() - t < 5
    assert_error(ask(server["url"], question="   "), 400, "invalid_question")


def test_a_small_png_declaring_a_huge_image_is_refused_before_decoding(server):
    bomb = png_bomb(11000, 11000)
    assert len(bomb) < 130_000
    before = rss_mb(server["proc"].pid)
    for _ in range(3):
        err = assert_error(ask(server["url"], files={"image": ("x.png", bomb, "image/png")}), 413, "image_too_large")
        assert "11000x11000" in err["message"]
    assert rss_mb(server["proc"].pid) - before < 150  # a decode would cost > 1 GB
    from tests.serve_utils import png_header_only

    err = assert_error(ask(server["url"], files={"image": ("x.png", png_header_only(50000, 50000), "image/png")}),
                       413, "image_too_large")
    assert "50000x50000" in err["message"]
    import io
    import struct

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (16, 16)).save(buf, format="JPEG")
    jpeg = bytearray(buf.getvalue())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)  # a JPEG whose frame header declares 60000x60000
    err = assert_error(ask(server["url"], files={"image": ("x.jpg", bytes(jpeg), "image/jpeg")}), 413,
                       "image_too_large")
    assert "60000x60000" in err["message"]


def test_body_limit_is_enforced_while_the_body_streams(server):
    port = server["port"]
    # declared too large: refused from the headers, before any body byte is read
    head = (f"POST /v1/ask HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {200 << 20}\r\n\r\n").encode()
    status, data, sent = raw_request(port, head, [b"x" * 65536] * 3)
    assert status == 413 and b'"upload_too_large"' in data
    # chunked, no length: refused once the limit (1 MB) is crossed, not after the 200 MB the client would send
    head = (f"POST /v1/ask HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
            "Content-Type: multipart/form-data; boundary=B\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    part = b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n" + b"\0" * 60000
    chunk = b"%x\r\n" % len(part) + part + b"\r\n"
    status, data, sent = raw_request(port, head, (chunk for _ in range(3500)))  # 210 MB offered
    assert status == 413 and b'"upload_too_large"' in data
    assert sent < 20 << 20, sent
    assert ask(server["url"]).status_code == 200  # and it keeps serving


def test_slow_clients_are_timed_out(server):
    head = (f"POST /v1/ask HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
            "Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 5000\r\n\r\n").encode()
    t = time.perf_counter()
    status, data, _ = raw_request(server["port"], head, [b"--B\r\n"], read_timeout=30)
    assert status == 408 and b'"request_timeout"' in data
    assert time.perf_counter() - t < 10  # --body-timeout 2


def test_clients_that_never_finish_their_headers_are_disconnected(server):
    import socket

    t = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", server["port"]), timeout=30)
    s.sendall(b"POST /v1/ask HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and nothing more
    assert s.recv(100) == b""  # closed by the server
    s.close()
    assert time.perf_counter() - t < 10  # --body-timeout 2 bounds the headers too
    idle = socket.create_connection(("127.0.0.1", server["port"]), timeout=30)  # opens, sends nothing
    assert idle.recv(100) == b""
    idle.close()


def test_the_queue_is_bounded(server):
    url = server["url"]
    results = []

    def one():
        r = ask(url)
        results.append((r.status_code, r.headers.get("retry-after"), r.json()))

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = [c for c, _, _ in results]
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
    for c, retry, body in results:
        if c == 503:
            assert retry == "2" and body["error"]["type"] == "overloaded"


def test_evidence_names_no_file_and_thumbnails_render_by_opaque_id(server):
    url = server["url"]
    with open(server["corpus"] / "img1.png", "rb") as f:
        r = ask(url, files={"image": ("Doe_Jane_MRN123.png", f, "image/png")})
    assert r.status_code == 200, r.text
    a = r.json()
    assert "img1.png" not in r.text and ".png" not in r.text and "Doe_Jane" not in r.text
    e = a["evidence"][0]
    assert e["case_id"] == "case1" and e["image"] is None and e["image_id"].startswith("img-")
    t = httpx.get(url + e["thumbnail"], headers=AUTH)
    assert t.status_code == 200 and t.headers["content-type"] == "image/png" and t.content[:4] == b"\x89PNG"
    from PIL import Image
    import io

    assert max(Image.open(io.BytesIO(t.content)).size) <= 256
    assert_error(httpx.get(url + f"/v1/cases/case1/images/img-000/thumbnail", headers=AUTH), 404)
    assert_error(httpx.get(url + f"/v1/cases/nope/images/{e['image_id']}/thumbnail", headers=AUTH), 404)


def test_logs_are_structured_and_hold_no_identifiers(server):
    from ragmed.serve.process import server_output

    with open(server["corpus"] / "img2.png", "rb") as f:
        ask(server["url"], question="Is there a pleural effusion in Jane Doe?",
            files={"image": ("Doe_Jane_MRN123.png", f, "image/png")})
    out = server_output(server["proc"])
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert len(lines) > 10
    recs = [json.loads(ln) for ln in lines]
    assert all(r["request_id"] for r in recs if r["event"] == "request")
    assert any(r.get("route") == "/v1/ask" and r.get("status") == 200 for r in recs)
    assert "Doe" not in out and "Jane" not in out and "MRN123" not in out and "img2.png" not in out
    assert "Traceback" not in out


def test_an_index_rebuilt_under_the_running_service_fails_no_request(server, text_encoder):
    from tests.serve_utils import build_index

    url, idx = server["url"], server["idx"]
    v0 = httpx.get(url + "/health").json()["index_version"]
    stop = threading.Event()
    codes: list[int] = []

    def client():
        while not stop.is_set():
            r = httpx.post(url + "/v1/retrieve", headers=AUTH, data={"question": "pneumothorax"}, timeout=120)
            codes.append(r.status_code)

    t = threading.Thread(target=client)
    t.start()
    try:
        for _ in range(1):  # the build removes the version the server had open
            build_index(server["corpus"], idx, text_encoder)
            time.sleep(1.0)
        deadline = time.monotonic() + 60
        while httpx.get(url + "/health").json()["index_version"] == v0 and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(1.0)
    finally:
        stop.set()
        t.join()
    assert codes and set(codes) == {200}, codes
    assert httpx.get(url + "/health").json()["index_version"] != v0
    assert httpx.get(url + "/readyz").json()["status"] == "ready"


def test_readiness_tells_the_truth_when_the_index_is_gone(server):
    url, idx = server["url"], server["idx"]
    (idx / "current").rename(idx / "current.away")
    try:
        err = assert_error(httpx.get(url + "/readyz"), 503, "not_ready")
        assert "no readable current version" in err["message"]
        assert httpx.get(url + "/health").status_code == 200  # alive, but not ready
    finally:
        (idx / "current.away").rename(idx / "current")
    assert httpx.get(url + "/readyz").status_code == 200


def test_graceful_shutdown_finishes_requests_in_flight(server):
    proc, url = server["proc"], server["url"]
    results = []

    def one():
        try:
            results.append(ask(url).status_code)
        except httpx.ConnectError:
            results.append("refused")  # arrived after the listener closed: never accepted

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.15)
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    # uvicorn re-raises the signal once it has shut down gracefully: the exit status is -SIGTERM either way, so the
    # log's last event tells a graceful shutdown from a kill
    assert proc.wait(timeout=40) in (0, -signal.SIGTERM)
    assert results and all(r in (200, 503, "refused") for r in results), results
    assert 200 in results, results
    from ragmed.serve.process import server_output

    events = [json.loads(ln)["event"] for ln in server_output(proc).splitlines() if ln.startswith("{")]
    assert events[-1] == "shutdown complete", events[-3:]


def test_api_keys_from_a_file_and_the_environment(tmp_path):
    from ragmed.errors import ConfigError
    from ragmed.serve.api import read_api_keys

    f = tmp_path / "keys"
    f.write_text("# rotated 2026-11\nfile-key-0123456789abcdef\n\nsecond-key-0123456789abcd\n")
    assert read_api_keys("env-key-0123456789abcdef, file-key-0123456789abcdef", f) == (
        "env-key-0123456789abcdef", "file-key-0123456789abcdef", "second-key-0123456789abcd")
    f.write_text("has space 0123456789abcdef\n")
    with pytest.raises(ConfigError):
        read_api_keys(None, f)
    with pytest.raises(ConfigError):
        read_api_keys(None, tmp_path / "missing")
