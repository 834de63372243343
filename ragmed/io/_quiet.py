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
        return not getattr(_state, "depth", 0)


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
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _state.depth -= 1
