"""Format readers behind ``load_image``. Each reader has ``can_read(path, head)`` and ``read(path, ...)``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from ragmed.errors import (
    BurnedInAnnotationError,
    DecodeError,
    ImageError,
    ImageTooLargeError,
    NoPixelDataError,
    RagmedError,
    UnsupportedFormatError,
)
from ragmed.io.image import MedicalImage, content_hash
from ragmed.io.windowing import minmax_normalise

MAX_PIXELS = 512 * 1024 * 1024 // 4  # samples across all frames decoded at once (~512 MB of float32)


class Reader(Protocol):
    name: str

    def can_read(self, path: Path, head: bytes) -> bool: ...

    def read(self, path: Path, shown: str, **options) -> MedicalImage: ...


def _shown(path: Path, root: str | Path | None) -> str:
    if root is not None:
        try:
            return os.path.relpath(path, root)
        except ValueError:
            pass
    return str(path)


class DicomReader:
    name = "dicom"

    def can_read(self, path: Path, head: bytes) -> bool:
        return len(head) >= 132 and head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom")

    def read(self, path: Path, shown: str, **options) -> MedicalImage:
        from ragmed.io.dicom import read_dicom

        return read_dicom(path, shown, **options)


class PillowReader:
    name = "pillow"
    _SIGS = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg"}

    def can_read(self, path: Path, head: bytes) -> bool:
        return any(head.startswith(s) for s in self._SIGS) or path.suffix.lower() in (".png", ".jpg", ".jpeg")

    def read(self, path: Path, shown: str, **options) -> MedicalImage:
        from PIL import Image, UnidentifiedImageError

        max_pixels = options.get("max_pixels", MAX_PIXELS)
        try:
            with Image.open(path) as im:
                fmt = (im.format or "").lower() or "png"
                if im.width * im.height > max_pixels:
                    raise ImageTooLargeError(f"{im.width}x{im.height} pixels exceeds the limit of {max_pixels}", path=shown)
                im.load()
                if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    arr = minmax_normalise(np.asarray(im, dtype=np.float32), 0, 100)
                elif im.mode in ("L", "1", "P", "LA") and (im.mode != "P" or _palette_is_gray(im)):
                    arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
                else:
                    arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
                    if _is_gray_rgb(arr):
                        arr = np.ascontiguousarray(arr[..., 0])
        except RagmedError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise DecodeError(f"cannot decode image: {type(e).__name__}: {e}", path=shown) from e
        return MedicalImage(
            pixels=arr.astype(np.float32), source=shown, content_hash=content_hash(path),
            format="jpeg" if fmt in ("jpeg", "jpg", "mpo") else fmt,
        )


def _palette_is_gray(im) -> bool:
    pal = np.asarray(im.convert("RGB"))
    return _is_gray_rgb(pal)


def _is_gray_rgb(arr: np.ndarray, tol: float = 2.0 / 255) -> bool:
    """True when the three channels are (almost) equal: a grayscale image stored as RGB."""
    sub = arr[:: max(1, arr.shape[0] // 64), :: max(1, arr.shape[1] // 64)]
    return bool(np.abs(sub[..., 0] - sub[..., 1]).max() <= tol and np.abs(sub[..., 1] - sub[..., 2]).max() <= tol)


READERS: list[Reader] = [DicomReader(), PillowReader()]


def load_image(
    path: str | Path,
    *,
    root: str | Path | None = None,
    allow_burned_in: bool = False,
    frame: int | str = "middle",
    max_pixels: int = MAX_PIXELS,
) -> MedicalImage:
    """Decode one image file into a normalised, de-identified :class:`MedicalImage`.

    ``root``: errors and ``MedicalImage.source`` name the file relative to it (the corpus directory).
    ``frame``: for multi-frame DICOM, ``"middle"`` (default), ``"first"`` or a 0-based index.
    Raises a subclass of :class:`ragmed.errors.ImageError` for anything that is not a loadable image.
    """
    p = Path(path)
    shown = _shown(p, root)
    try:
        if not p.exists():
            raise ImageError("file not found", path=shown)
        if p.is_dir():
            return load_series(p, root=root, allow_burned_in=allow_burned_in, max_pixels=max_pixels)
        with open(p, "rb") as f:
            head = f.read(256)
        if not head:
            raise UnsupportedFormatError("empty file", path=shown)
        # Content sniffing first, suffix second.
        ordered = sorted(READERS, key=lambda r: 0 if _sniff(r, head) else 1)
        for reader in ordered:
            if reader.can_read(p, head):
                return reader.read(p, shown, allow_burned_in=allow_burned_in, frame=frame, max_pixels=max_pixels)
        # DICOM without preamble ("no meta") still parses with force=True: try it last.
        return DicomReader().read(p, shown, allow_burned_in=allow_burned_in, frame=frame, max_pixels=max_pixels,
                                  sniffed=False)
    except RagmedError:
        raise
    except (MemoryError, RecursionError) as e:
        raise DecodeError(f"cannot decode: {type(e).__name__}", path=shown) from e
    except Exception as e:  # last line: nothing but typed errors leaves io
        raise DecodeError(f"cannot decode: {type(e).__name__}: {_safe(e)}", path=shown) from e


def _safe(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return text[:200]


def _sniff(reader: Reader, head: bytes) -> bool:
    if isinstance(reader, DicomReader):
        return head[128:132] == b"DICM"
    return any(head.startswith(s) for s in PillowReader._SIGS)


def load_series(directory: str | Path, *, root: str | Path | None = None, **options) -> MedicalImage:
    """Load a DICOM series directory: the middle slice by position along the slice normal (else InstanceNumber)."""
    from ragmed.io.dicom import read_series

    d = Path(directory)
    return read_series(d, _shown(d, root), root=root, **options)


__all__ = ["load_image", "load_series", "READERS", "BurnedInAnnotationError", "NoPixelDataError"]
