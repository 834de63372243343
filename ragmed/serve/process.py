"""Run ``ragmed serve openai`` / ``ragmed serve api`` as a child process on 127.0.0.1 (for apps that embed
ragmed, benchmarks and tests).

    proc, url = start_openai_server(["--generator", "gguf"])   # returns once GET /health answers 200
    proc, url = start_server("api", ["--index", "indexes/demo"])
    ...
    stop_server(proc)
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from ragmed.errors import GeneratorError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_openai_server(args: list[str], env: dict | None = None,
                        timeout: float = 300.0) -> tuple[subprocess.Popen, str]:
    """Start ``ragmed serve openai --port PORT ARGS``; return (process, base URL) once ``/health`` answers."""
    return start_server("openai", args, env=env, timeout=timeout)


def start_server(service: str, args: list[str], env: dict | None = None,
                 timeout: float = 300.0) -> tuple[subprocess.Popen, str]:
    """Start ``ragmed serve SERVICE --port PORT ARGS``; return (process, base URL) once ``/health`` answers.

    Raises :class:`GeneratorError` with the server's last output when it exits or does not come up in ``timeout``
    seconds (the process is killed then)."""
    import httpx

    import tempfile

    port = free_port()
    cmd = [sys.executable, "-c", "from ragmed.cli import main; main()", "serve", service, "--port", str(port), *args]
    # the server's output goes to a file, not a pipe nobody reads (a full pipe would block the server)
    log = tempfile.NamedTemporaryFile(prefix=f"ragmed-serve-{service}-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    log.close()
    proc.log_path = log.name  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = server_output(proc)[-2000:]
            raise GeneratorError(f"the server exited with status {proc.returncode}: {out}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    stop_server(proc)
    raise GeneratorError(f"the server did not answer {url}/health within {timeout:.0f} s")


def server_output(proc: subprocess.Popen) -> str:
    """What the server has written to stdout / stderr so far."""
    path = getattr(proc, "log_path", None)
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def stop_server(proc: subprocess.Popen, *, keep_log: bool = False) -> int:
    """Terminate (SIGTERM: a graceful shutdown), then kill after 35 s; returns the exit status."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=35)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    path = getattr(proc, "log_path", None)
    if path and not keep_log:
        try:
            os.unlink(path)
        except OSError:
            pass
    return proc.returncode
