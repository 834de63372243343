"""Keep pydicom's and Pillow's diagnostics from leaking header values into warnings and logs.

pydicom reports invalid values by quoting them (``Invalid value for VR IS: 'Doe^John'``, EOF warnings with the
file's absolute path …), and such a value may be a patient's name. While a thread is inside :func:`quiet`:

* records of the ``pydicom`` / ``PIL`` loggers (and their child loggers) emitted by *that thread* are dropped, by a
  filter on a thread-local flag;
* warnings raised by *that thread* are swallowed: the first thread to enter installs (once, under a lock) a
  ``warnings.showwarning`` hook and an "always" filter, the last one to leave restores the previous state. Warnings
  from other threads are passed to the previous ``showwarning`` meanwhile (shown each time rather than once).

Both channels also count, per thread, pydicom's reports that it stopped reading a dataset early (end of file, an
unreadable value): :func:`parse_stops`.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import warnings

_state = threading.local()
LOGGERS = ("pydicom", "PIL")


def _is_stop(text: str) -> bool:
    text = text.lower()
    return "end of file" in text or "bytes expected" in text


def _note(text: str, level: int = logging.WARNING) -> None:
    if level >= logging.ERROR or _is_stop(text):
        _state.parse_stops = getattr(_state, "parse_stops", 0) + 1


class _DropWhileReading(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:  # noqa: A003
        if not getattr(_state, "depth", 0):
            return True
        try:
            text = str(record.msg)
        except Exception:  # noqa: BLE001
            text = ""
        _note(text, record.levelno)
        return False


_FILTER = _DropWhileReading()
_seen = -1


def _attach() -> None:
    """Put the filter on ``pydicom`` / ``PIL`` and every child logger they created (filters do not propagate)."""
    global _seen
    names = logging.root.manager.loggerDict
    if len(names) == _seen:
        return
    for name in [*LOGGERS, *list(names)]:
        if name.split(".")[0] in LOGGERS:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
    _seen = len(names)


_lock = threading.Lock()
_users = 0
_saved: warnings.catch_warnings | None = None
_previous_show = None


def _show(message, category, filename, lineno, file=None, line=None):
    if getattr(_state, "depth", 0):
        _note(str(message))
        return  # swallowed: raised while this thread reads a file
    prev = _previous_show or warnings._showwarning_orig  # type: ignore[attr-defined]
    prev(message, category, filename, lineno, file, line)


def _enter_warnings() -> None:
    global _users, _saved, _previous_show
    with _lock:
        if _users == 0:
            _saved = warnings.catch_warnings()
            _saved.__enter__()
            _previous_show = warnings.showwarning
            warnings.simplefilter("always")
            warnings.showwarning = _show
        _users += 1


def _exit_warnings() -> None:
    global _users, _saved, _previous_show
    with _lock:
        _users -= 1
        if _users == 0 and _saved is not None:
            _saved.__exit__(None, None, None)
            _saved = None
            _previous_show = None


def parse_stops() -> int:
    """How many times pydicom reported, in this thread, that it stopped reading a dataset early."""
    return getattr(_state, "parse_stops", 0)


@contextlib.contextmanager
def quiet():
    _attach()
    depth = getattr(_state, "depth", 0)
    if not depth:
        _state.parse_stops = 0
        _enter_warnings()
    _state.depth = depth + 1
    try:
        yield
    finally:
        _state.depth -= 1
        if not depth:
            _exit_warnings()
