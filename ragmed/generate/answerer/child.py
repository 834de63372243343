"""The answerer's fallback generator in a child Python process, started at the beginning of a cold open question so
that the model loads on another core while retrieval runs.

Why a process and not a thread: loading SmolLM2 is mostly *importing* transformers' modelling code (≈ 2.5 s of CPU on
this machine, pure Python under the GIL), so a loading thread and the main thread's retrieval serialise on the GIL
even on an idle 2-core machine. A child interpreter has its own GIL. It builds the same generator with the same
parameters (:func:`ragmed.generate.create_generator`) and answers ``generate`` calls sent as pickles over its
standard input / output; the parent never imports transformers. Greedy decoding in float32 on one thread: the same
answer as in the parent process.

The child ends when its standard input closes (the parent exited or called :meth:`ChildGenerator.close`), with
``os._exit`` (no teardown of the loaded model).

Opt-in (``fallback_in_child: true``): on the idle 2-core machine it saved 0.1 s of a 5.9 s cold open question for one
more CPU second, and at load 4–5 it was slower (README, ragmed-answerer section; ``bench_ask_answerer_open_quiet_ab.json``).
"""
from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

from ragmed.errors import GeneratorError

log = logging.getLogger(__name__)


def _send(f, obj) -> None:
    pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    f.flush()


class ChildGenerator:
    """A generator (``name``, ``params``) built and run in a child process; :meth:`generate` has the generator
    protocol's signature. ``warm_up`` waits until the child has loaded its model (and re-raises its error)."""

    def __init__(self, name: str, params: dict[str, Any]):
        self.name, self.params = name, dict(params)
        payload = pickle.dumps((name, self.params), protocol=pickle.HIGHEST_PROTOCOL)  # fails early if unpicklable
        root = str(Path(__file__).resolve().parents[3])  # the directory holding this ragmed package
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self._proc = subprocess.Popen([sys.executable, "-m", "ragmed.generate.answerer.child"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._proc.stdin.write(payload)
        self._proc.stdin.flush()
        self._lock = threading.Lock()
        self._ready = False
        self._error: BaseException | None = None
        self.model_id = f"{name} (child process)"
        self._finalizer = weakref.finalize(self, ChildGenerator._stop, self._proc)

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()

    def close(self) -> None:
        self._finalizer()

    def _recv(self):
        try:
            return pickle.load(self._proc.stdout)
        except EOFError:
            raise GeneratorError(f"the {self.name} fallback's child process ended (exit code {self._proc.poll()})",
                                 remedy="set generator.params.fallback_in_child: false to load it in this "
                                        "process") from None

    def warm_up(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._error is not None:
                raise self._error
            if not self._ready:
                kind, value = self._recv()
                if kind == "error":
                    self._error = value
                    raise value
                self.model_id = value
                self._ready = True

    def generate(self, question, evidence, knowledge, *, image=None, domain=None, task="open"):
        self.warm_up()
        with self._lock:
            _send(self._proc.stdin, (question, evidence, knowledge, {"image": image, "domain": domain, "task": task}))
            kind, value = self._recv()
        if kind == "error":
            raise value
        return value


def _portable(e: BaseException) -> BaseException:
    """``e`` if it survives pickling, else a GeneratorError with its text."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001
        return GeneratorError(f"{type(e).__name__}: {e}")


def serve() -> None:
    """The child's loop (:func:`_serve`); ends quietly when the parent has gone (its pipe closed)."""
    try:
        _serve()
    except (BrokenPipeError, EOFError):
        pass
    os._exit(0)


def _serve() -> None:
    """Read (name, params), build and load the generator, report ``("ready", model_id)`` or ``("error", exception)``,
    then answer each pickled request until standard input closes."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything the libraries print goes to standard error, not into the protocol
    inp = sys.stdin.buffer
    try:
        name, params = pickle.load(inp)
        from ragmed.generate import create_generator

        gen = create_generator(name, **params)
        gen.warm_up()
        _send(out, ("ready", gen.model_id))
    except EOFError:
        os._exit(0)
    except Exception as e:  # noqa: BLE001 - handed to the parent, which raises it where it would have
        _send(out, ("error", _portable(e)))
        os._exit(0)
    while True:
        try:
            question, evidence, knowledge, kw = pickle.load(inp)
        except EOFError:
            out.flush()
            os._exit(0)
        try:
            _send(out, ("ok", gen.generate(question, evidence, knowledge, **kw)))
        except Exception as e:  # noqa: BLE001
            _send(out, ("error", _portable(e)))


if __name__ == "__main__":
    serve()
