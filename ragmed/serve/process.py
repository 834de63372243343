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

    port = free_port()
    cmd = [sys.executable, "-c", "from ragmed.cli import main; main()", "serve", service, "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace")[-2000:] if proc.stdout else ""
            raise GeneratorError(f"the server exited with status {proc.returncode}: {out}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    stop_server(proc)
    raise GeneratorError(f"the server did not answer {url}/health within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    """Terminate, then kill after 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
