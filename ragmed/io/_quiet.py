"""Keep pydicom's and Pillow's diagnostics from leaking header values into warnings and logs.

pydicom reports invalid values by quoting them (``Invalid value for VR DA: '19700101'`` …), and such a value may be a
patient's name or birth date. While ``ragmed.io`` reads a file, :func:`quiet` discards warnings and drops records
of the ``pydicom`` and ``PIL`` loggers emitted by the reading thread. The logging part is exact per thread (a filter
on a thread-local flag); ``warnings.catch_warnings`` is process-wide in Python < 3.14, so a warning raised by
another thread during a read may be hidden too (never shown in place of ours).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import warnings

_state = threading.local()
LOGGERS = ("pydicom", "PIL")


class _DropWhileReading(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:  # noqa: A003
        if not getattr(_state, "depth", 0):
            return True
        try:
            text = str(record.msg).lower()
        except Exception:  # noqa: BLE001
            text = ""
        if record.levelno >= logging.ERROR or _is_stop(text):
            _state.parse_stops = getattr(_state, "parse_stops", 0) + 1
        return False


def _is_stop(text: str) -> bool:
    text = text.lower()
    return "end of file" in text or "bytes expected" in text


def parse_stops() -> int:
    """How many times pydicom reported, in this thread, that it stopped reading a dataset early (EOF or a value
    it could not read), since the outermost :func:`quiet` began (seen in its log records and in its warnings, so
    that a logging configuration that silences pydicom does not hide it)."""
    caught = getattr(_state, "caught", None) or []
    return max(getattr(_state, "parse_stops", 0), sum(1 for w in caught if _is_stop(str(w.message))))


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


@contextlib.contextmanager
def quiet():
    _attach()
    if not getattr(_state, "depth", 0):
        _state.parse_stops = 0
    outer = not getattr(_state, "depth", 0)
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        if outer:
            with warnings.catch_warnings(record=True) as caught:  # recorded, never shown
                warnings.simplefilter("always")
                _state.caught = caught
                yield
        else:
            yield
    finally:
        _state.depth -= 1
        if outer:
            _state.caught = None
