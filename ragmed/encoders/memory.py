"""Keeping a long build's resident memory flat: returning freed heap to the OS, reading rows from a file.

``trim_heap()``: glibc's malloc keeps the memory that a freed batch's tensors and buffers occupied (in its arenas)
and reuses it only for allocations that fit; a text-encoder batch of long reports frees ~200 MB that stay resident
(measured: MiniLM, 32 IU X-ray reports a batch, 338 → 562 MB resident after 256 reports without a trim, 343 MB with
one after each batch). ``malloc_trim(0)`` hands the free pages back; it costs well under a millisecond per call and is
a no-op where the C library is not glibc.

``RowFile``: a read-only ``(n, *row_shape)`` array stored row after row in a plain file, read with ``os.pread``.
Unlike a ``numpy.memmap``, the rows it has read are not mapped into the process, so they do not count in its
resident memory (the kernel's page cache holds them, and can drop them).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

import numpy as np

_libc = None


def trim_heap() -> bool:
    """Return free heap memory to the OS (glibc ``malloc_trim(0)``); False where unavailable."""
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc = lib if hasattr(lib, "malloc_trim") else False
        except OSError:
            _libc = False
    if not _libc:
        return False
    _libc.malloc_trim(0)
    return True


class RowFile:
    """Rows of a fixed shape and dtype in a file (row ``i`` at byte ``i * row_bytes``), indexed like an array:
    ``rf[i]``, ``rf[a:b]`` (step 1) or ``rf[index_array]`` give numpy arrays. Write it with :meth:`create` and
    :meth:`write_row`."""

    def __init__(self, path: str | Path, n: int, row_shape: tuple[int, ...], dtype=np.uint8):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.shape = (int(n), *(int(s) for s in row_shape))
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None
        self._wfd: int | None = None

    @classmethod
    def create(cls, path: str | Path, n: int, row_shape: tuple[int, ...], dtype=np.uint8) -> "RowFile":
        rf = cls(path, n, row_shape, dtype)
        with open(rf.path, "wb") as f:
            f.truncate(rf.shape[0] * rf.row_bytes)
        return rf

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _handle(self, flags: int = os.O_RDONLY) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, flags)
        return self._fd

    def write_row(self, i: int, row: np.ndarray) -> None:
        data = np.ascontiguousarray(row, dtype=self.dtype).tobytes()
        if len(data) != self.row_bytes:
            raise ValueError(f"row of {len(data)} bytes, expected {self.row_bytes}")
        if self._wfd is None:
            self._wfd = os.open(self.path, os.O_WRONLY)
        os.pwrite(self._wfd, data, int(i) * self.row_bytes)

    def _read(self, start: int, count: int) -> np.ndarray:
        buf = os.pread(self._handle(), count * self.row_bytes, start * self.row_bytes)
        if len(buf) != count * self.row_bytes:
            raise IndexError(f"rows {start}..{start + count} beyond the end of {self.path.name}")
        return np.frombuffer(buf, dtype=self.dtype).reshape((count, *self.shape[1:])).copy()

    def __getitem__(self, key) -> np.ndarray:
        n = self.shape[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                raise IndexError("RowFile slices take step 1")
            return self._read(start, max(0, stop - start))
        if np.ndim(key) == 0:
            i = int(key)
            i = i + n if i < 0 else i
            if not 0 <= i < n:
                raise IndexError(f"row {key} out of range ({n} rows)")
            return self._read(i, 1)[0]
        idx = np.asarray(key, dtype=np.int64)
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"row index out of range ({n} rows)")
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        for j, i in enumerate(idx.tolist()):
            out[j] = self._read(i, 1)[0]
        return out

    def close(self) -> None:
        for name in ("_fd", "_wfd"):
            fd = getattr(self, name, None)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
