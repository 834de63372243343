"""Format readers behind ``load_image``. Each reader has ``can_read(path, head)`` and ``read(path, shown, ...)``."""
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
from ragmed.io.dicom import DEFAULT_MAX_PIXELS
from ragmed.io.image import MedicalImage, content_hash
from ragmed.registry import Registry

MAX_PIXELS = DEFAULT_MAX_PIXELS  # samples of the one frame decoded at once (~512 MB as float32)


class Reader(Protocol):
    name: str

    def sniff(self, head: bytes) -> bool: ...

    def can_read(self, path: Path, head: bytes) -> bool: ...

    def read(self, path: Path, shown: str, **options) -> MedicalImage: ...


def _shown(path: Path, root: str | Path | None) -> str:
    """The name errors and ``MedicalImage.source`` use: the path relative to ``root`` when one is given."""
    if root is not None:
        try:
            return os.path.relpath(path, root)
        except ValueError:
            pass
    return str(path)


class DicomReader:
    name = "dicom"

    def sniff(self, head: bytes) -> bool:
        return _sniff_dicom(head)

    def can_read(self, path: Path, head: bytes) -> bool:
        return len(head) >= 132 and head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom")

    def read(self, path: Path, shown: str, **options) -> MedicalImage:
        from ragmed.io.dicom import read_dicom

        return read_dicom(path, shown, **options)


class PillowReader:
    """PNG and JPEG through Pillow.

    8-bit grayscale is scaled by 1/255; 16-bit grayscale (PNG ``I;16``) by ``2**k - 1`` where ``k`` (≥ 8) is the
    number of bits its largest value needs (so 12-bit data stored in 16 bits keeps its contrast); colour becomes RGB
    (alpha dropped), and an RGB image whose channels are equal becomes grayscale. JPEG EXIF orientation is applied.
    Text chunks / EXIF are never read out.
    """

    name = "pillow"
    _SIGS = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg"}

    def sniff(self, head: bytes) -> bool:
        return any(head.startswith(s) for s in self._SIGS)

    def can_read(self, path: Path, head: bytes) -> bool:
        return any(head.startswith(s) for s in self._SIGS) or path.suffix.lower() in (".png", ".jpg", ".jpeg")

    def read(self, path: Path, shown: str, **options) -> MedicalImage:
        from PIL import Image, ImageOps

        from ragmed.io._quiet import quiet

        max_pixels = options.get("max_pixels", MAX_PIXELS)
        try:
            with quiet(), Image.open(path) as im:
                fmt = (im.format or "").lower()
                if fmt not in ("png", "jpeg", "mpo"):
                    raise UnsupportedFormatError(f"image format {fmt or 'unknown'} is not PNG or JPEG", path=shown)
                bands = len(im.getbands())
                if im.width * im.height * max(1, min(bands, 3)) > max_pixels:
                    raise ImageTooLargeError(f"{im.width}x{im.height} pixels exceeds the limit of {max_pixels}",
                                             path=shown, remedy="raise max_pixels if this image is expected")
                im.load()
                if fmt in ("jpeg", "mpo"):
                    im = ImageOps.exif_transpose(im)
                arr = _to_float(im)
        except RagmedError:
            raise
        except (MemoryError, Exception) as e:  # noqa: BLE001 - Pillow's messages can hold the absolute path
            raise DecodeError(f"cannot decode the {'PNG' if path.suffix.lower() == '.png' else 'image'} file "
                              f"({type(e).__name__})", path=shown) from None
        return MedicalImage(
            pixels=arr, source=shown, content_hash=content_hash(path),
            format="jpeg" if fmt in ("jpeg", "mpo") else "png",
            meta={"bit_depth": "16" if im.mode.startswith("I") else "8"},
        )


def _to_float(im) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        a = np.clip(a, 0, None)
        top = float(a.max()) if a.size else 0.0
        bits = max(8, int(np.ceil(np.log2(top + 1)))) if top > 0 else 8
        return np.clip(a / float((1 << bits) - 1), 0, 1).astype(np.float32)
    if im.mode == "F":
        from ragmed.io.windowing import minmax_normalise

        return minmax_normalise(np.asarray(im, dtype=np.float32), 0, 100)
    if im.mode in ("L", "1", "LA") or im.mode == "P" and _palette_is_gray(im):
        return (np.asarray(im.convert("L"), dtype=np.float32) / 255.0).astype(np.float32)
    arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    if _is_gray_rgb(arr):
        arr = np.ascontiguousarray(arr[..., 0])
    return arr.astype(np.float32)


def _palette_is_gray(im) -> bool:
    pal = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return _is_gray_rgb(pal)


def _is_gray_rgb(arr: np.ndarray, tol: float = 2.0 / 255) -> bool:
    """True when the three channels are (almost) equal: a grayscale image stored as RGB."""
    sub = arr[:: max(1, arr.shape[0] // 64), :: max(1, arr.shape[1] // 64)]
    return bool(np.abs(sub[..., 0] - sub[..., 1]).max() <= tol and np.abs(sub[..., 1] - sub[..., 2]).max() <= tol)


READER_REGISTRY = Registry("image reader")  # in the order load_image tries them
READER_REGISTRY.register("dicom", DicomReader)
READER_REGISTRY.register("pillow", PillowReader)
READERS: list[Reader] = [DicomReader(), PillowReader()]  # instances, in that order


def register_reader(name: str, reader: Reader) -> None:
    """Add a format: ``reader`` has ``name``, ``sniff(head)``, ``can_read(path, head)`` and ``read(path, shown, …)``;
    it is tried after the built-in ones."""
    READER_REGISTRY.register(name, type(reader))
    READERS.append(reader)


def load_image(
    path: str | Path,
    *,
    root: str | Path | None = None,
    allow_burned_in: bool = False,
    frame: int | str = "middle",
    max_pixels: int = MAX_PIXELS,
    isolate: str = "auto",
) -> MedicalImage:
    """Decode one image file (or a DICOM series directory) into a normalised, de-identified :class:`MedicalImage`.

    ``root``: errors and ``MedicalImage.source`` name the file relative to it (the corpus directory).
    ``frame``: for multi-frame DICOM, ``"middle"`` (default: middle of the stack by position, see
    :func:`ragmed.io.dicom.choose_frame`), ``"first"`` or a 0-based index.
    ``max_pixels``: the most samples (Rows × Columns × Samples per Pixel) of the frame decoded; larger images raise
    :class:`~ragmed.errors.ImageTooLargeError` before anything is decoded.
    ``isolate``: ``"auto"`` decodes compressed DICOM pixel data in a worker process (crash / hang / memory
    containment), ``"always"`` all DICOM pixel data, ``"never"`` none.
    Raises a subclass of :class:`ragmed.errors.ImageError` for anything that is not a loadable image, and nothing else.
    """
    p = Path(path)
    shown = _shown(p, root)
    opts = dict(allow_burned_in=allow_burned_in, frame=frame, max_pixels=max_pixels)
    try:
        if not p.exists():
            raise ImageError("file not found", path=shown)
        if p.is_dir():
            return load_series(p, root=root, isolate=isolate, **opts)
        if not p.is_file():  # a FIFO or device would block the read
            raise UnsupportedFormatError("not a regular file", path=shown)
        with open(p, "rb") as f:
            head = f.read(256)
        if not head:
            raise UnsupportedFormatError("empty file", path=shown)
        # Content sniffing first (every registered reader), suffix second.
        for reader in READERS:
            if reader.sniff(head):
                if isinstance(reader, DicomReader):
                    return reader.read(p, shown, isolate=isolate, **opts)
                return reader.read(p, shown, **opts)
        for reader in READERS:
            if reader.can_read(p, head):
                if isinstance(reader, DicomReader):  # by suffix: no DICM preamble
                    return reader.read(p, shown, isolate=isolate, sniffed=False, **opts)
                return reader.read(p, shown, **opts)
        # DICOM without preamble ("no meta") still parses with force=True: try it last.
        return DicomReader().read(p, shown, sniffed=False, isolate=isolate, **opts)
    except RagmedError:
        raise
    except (MemoryError, RecursionError) as e:
        raise DecodeError(f"cannot decode ({type(e).__name__})", path=shown) from None
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # noqa: BLE001 - last line (a Rust panic is a BaseException): only typed errors leave
        raise DecodeError(f"cannot decode ({type(e).__name__})", path=shown) from None


def _sniff_dicom(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def load_series(directory: str | Path, *, root: str | Path | None = None, **options) -> MedicalImage:
    """Load a DICOM series directory: the middle slice by position along the slice normal (see
    :func:`ragmed.io.dicom.read_series`)."""
    from ragmed.io.dicom import read_series

    d = Path(directory)
    shown = _shown(d, root)
    if not d.is_dir():
        raise ImageError("not a directory", path=shown)
    return read_series(d, shown, root=root, load=load_image, **options)


__all__ = ["load_image", "load_series", "READERS", "READER_REGISTRY", "register_reader", "BurnedInAnnotationError", "NoPixelDataError"]
