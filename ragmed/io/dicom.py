"""DICOM reading through pydicom and its pixel-data plugins (pylibjpeg, openjpeg, libjpeg, rle).

What a DICOM file becomes:

* **Header.** Only :data:`ragmed.io.deid.RETAINED_KEYWORDS` are read out of the dataset (attributes that the PS3.15
  Basic Application Level Confidentiality Profile keeps); private tags and everything else stay inside this module.
  Code-string values are cleaned to ``[A-Z0-9 _]``. The dataset itself is dropped after decoding.
* **Checks before decoding.** Pixel data present (else :class:`NoPixelDataError`), BurnedInAnnotation
  (:class:`BurnedInAnnotationError` unless allowed), a valid image pixel module, ``Rows × Columns × Samples`` of the
  frame to decode within ``max_pixels`` (:class:`ImageTooLargeError`), and ``NumberOfFrames`` consistent with the
  size of the pixel data (:class:`DecodeError`): nothing is allocated from a header's word alone.
* **Decoding.** One frame only. Compressed transfer syntaxes are decoded in an isolated worker process
  (:mod:`ragmed.io._isolate`: address-space limit, timeout; a crash becomes a :class:`DecodeError`); native
  (uncompressed) pixel data is decoded in-process by numpy. ``isolate="always" | "never"`` overrides.
* **Frame choice.** ``frame="middle"`` (default): for a multi-frame image with per-frame positions (enhanced CT / MR),
  the frame in the middle of the stack along the slice normal (the first in time at that position); otherwise frame
  ``NumberOfFrames // 2``. ``"first"`` or a 0-based index pick explicitly.
* **Display.** Grayscale: modality LUT / rescale (``apply_modality_lut``), then VOI LUT or the first window centre /
  width (``apply_voi_lut``), mapped linearly from the transform's full output range to [0, 1]; without VOI data the
  0.5–99.5 percentile range. MONOCHROME1 is inverted. Colour: pydicom converts YBR_FULL / YBR_FULL_422 to RGB,
  the JPEG 2000 decoders undo YBR_ICT / YBR_RCT, ragmed converts YBR_PARTIAL_422 / _420 (BT.601 studio range);
  RGB is scaled by ``2**BitsStored - 1``;
  PALETTE COLOR goes through its lookup table (``apply_color_lut``).
* **Errors** name the file by the path the caller gave relative to the corpus root and a reason from ragmed's own
  vocabulary (exception *types*, transfer-syntax *names*); pydicom's exception texts are never passed on, since they
  can quote header values.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ragmed.errors import (
    BurnedInAnnotationError,
    DecodeError,
    ImageError,
    ImageTooLargeError,
    NoPixelDataError,
    UnsupportedFormatError,
)
from ragmed.io._quiet import parse_stops
from ragmed.io.deid import clean_code, uid_name
from ragmed.io.image import MedicalImage, content_hash
from ragmed.io.windowing import minmax_normalise
from ragmed.io.decode_errors import classify_decode_error  # noqa: F401 - re-exported

PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
DEFAULT_MAX_PIXELS = 1 << 27  # samples in the one frame decoded (~512 MB as float32)
ISOLATE_CHOICES = ("auto", "always", "never")


def read_dicom(path: Path, shown: str, *, allow_burned_in: bool = False, frame: int | str = "middle",
               max_pixels: int = DEFAULT_MAX_PIXELS, sniffed: bool = True, isolate: str = "auto") -> MedicalImage:
    import pydicom
    import pydicom.pixels  # noqa: F401 - create its loggers before quiet() puts its filter on them

    from ragmed.io._quiet import quiet

    if isolate not in ISOLATE_CHOICES:
        raise ImageError(f"isolate must be one of {', '.join(ISOLATE_CHOICES)}, not {isolate!r}", path=shown)
    with quiet():
        return _read(pydicom, path, shown, allow_burned_in=allow_burned_in, frame=frame, max_pixels=max_pixels,
                     sniffed=sniffed, isolate=isolate)


def _parse(pydicom, path: Path, shown: str, sniffed: bool, **kw):
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, force=True, **kw)
    except InvalidDicomError:
        raise UnsupportedFormatError("not a DICOM, PNG or JPEG file", path=shown) from None
    except (MemoryError, RecursionError, Exception) as e:  # noqa: BLE001 - any parser failure is a typed error
        if not sniffed:
            raise UnsupportedFormatError("not a DICOM, PNG or JPEG file", path=shown) from None
        raise DecodeError(f"cannot parse the DICOM header ({type(e).__name__})", path=shown) from None
    return ds


def _has(ds, keyword: str) -> bool:
    try:
        return keyword in ds
    except Exception:  # noqa: BLE001
        return False


def _get(ds, keyword: str):
    """A retained attribute's value, or None when absent or unreadable (a corrupt value is treated as absent)."""
    try:
        v = ds.get(keyword)
    except Exception:  # noqa: BLE001
        return None
    return None if v is None or v == "" else v


def _int(ds, keyword: str, default: int | None = None) -> int | None:
    v = _get(ds, keyword)
    if v is None:
        return default
    try:
        return int(float(str(v[0] if isinstance(v, (list, tuple)) else v)))
    except Exception:  # noqa: BLE001
        raise ValueError(keyword) from None


def _read(pydicom, path: Path, shown: str, *, allow_burned_in, frame, max_pixels, sniffed, isolate) -> MedicalImage:
    stops_before = parse_stops()
    ds = _parse(pydicom, path, shown, sniffed)
    has_pixels = any(_has(ds, t) for t in PIXEL_TAGS)
    if not sniffed and not has_pixels and not any(_has(ds, k) for k in ("SOPClassUID", "Modality", "Rows")):
        raise UnsupportedFormatError("not a DICOM, PNG or JPEG file", path=shown)
    if not has_pixels:
        if parse_stops() > stops_before or _has_pixel_tag_bytes(path):
            raise DecodeError("corrupt DICOM header: reading stopped before the pixel data "
                              "(truncated file, a bad tag or element length)", path=shown)
        meta0 = getattr(ds, "file_meta", None)
        sop = _get(ds, "SOPClassUID") or (_get(meta0, "MediaStorageSOPClassUID") if meta0 is not None else None)
        what = uid_name(sop) or "unknown SOP class"
        raise NoPixelDataError(f"DICOM object has no pixel data ({what})", path=shown)
    if clean_code(_get(ds, "BurnedInAnnotation")) == "YES" and not allow_burned_in:
        raise BurnedInAnnotationError("flagged BurnedInAnnotation=YES; skipped", path=shown,
                                      remedy="allow such images with index.allow_burned_in: true in the "
                                             "pipeline YAML, or load_image(..., allow_burned_in=True)")
    meta_ds = getattr(ds, "file_meta", None)
    tsyntax = _get(meta_ds, "TransferSyntaxUID") if meta_ds is not None else None
    ts_name = uid_name(tsyntax) or "unknown transfer syntax"
    try:
        rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
        frames = _int(ds, "NumberOfFrames", 1) or 1
        spp = _int(ds, "SamplesPerPixel", 1) or 1
        bits_alloc = _int(ds, "BitsAllocated", 0) or 0
    except ValueError as e:
        raise DecodeError(f"image pixel module has an invalid {e.args[0]}", path=shown) from None
    if rows is None or cols is None:
        raise DecodeError("image pixel module incomplete (Rows / Columns missing)", path=shown)
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise DecodeError(f"invalid image size {rows}x{cols}, {frames} frame(s)", path=shown)
    if spp not in (1, 3):
        raise DecodeError(f"unsupported Samples per Pixel {spp}", path=shown)
    if rows * cols * spp > max_pixels:
        raise ImageTooLargeError(f"{rows}x{cols}x{spp} samples per frame exceeds the limit of {max_pixels}",
                                 path=shown, remedy="raise max_pixels if this image is expected")
    compressed = _is_compressed(tsyntax)
    n_bytes = _pixel_bytes(ds)
    if compressed:
        if frames > max(1, n_bytes // 8):  # each encapsulated frame needs at least an 8-byte item header
            raise DecodeError(f"NumberOfFrames {frames} is inconsistent with {n_bytes} bytes of pixel data",
                              path=shown)
    elif bits_alloc > 0 and n_bytes >= 0:
        need = (rows * cols * spp * frames * bits_alloc + 7) // 8
        if spp == 3 and clean_code(_get(ds, "PhotometricInterpretation")) == "YBR_FULL_422":
            need = need * 2 // 3  # two chroma samples per two pixels
        if need > n_bytes + 1:
            raise DecodeError(f"pixel data holds {n_bytes} bytes, the image pixel module declares {need} "
                              f"({rows}x{cols}x{spp}, {frames} frame(s), {bits_alloc} bits)", path=shown)
    index = choose_frame(ds, frame, frames, shown)
    if compressed:
        _check_codestream(ds, tsyntax, index, frames, rows, cols, shown, ts_name)
    use_worker = (isolate == "always" or (isolate == "auto" and compressed))
    from ragmed.io import _isolate

    if use_worker and _isolate.available():
        arr = _decode_isolated(Path(os.path.abspath(path)), index if frames > 1 else None, shown, ts_name)
    else:
        arr = _decode_here(ds, index if frames > 1 else None, shown, ts_name)
    if arr.ndim not in (2, 3) or tuple(arr.shape[:2]) != (rows, cols):
        raise DecodeError(f"decoded {ts_name} frame has shape {tuple(arr.shape)}, header declares {rows}x{cols}",
                          path=shown)
    pi = clean_code(_get(ds, "PhotometricInterpretation")) or ""
    try:
        pixels = _to_display(ds, arr, pi, spp)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DecodeError(f"cannot convert the decoded pixels for display ({type(e).__name__})", path=shown) from None
    if pixels.ndim == 3 and pixels.shape[2] != 3 or pixels.ndim not in (2, 3):
        raise DecodeError(f"unexpected pixel array shape {pixels.shape}", path=shown)
    meta = {"frames": str(frames), "frame": str(index), "transfer_syntax": ts_name}
    if pi:
        meta["photometric"] = pi.replace(" ", "_") if pi == "PALETTE COLOR" else pi
    sop = uid_name(_get(ds, "SOPClassUID"))
    if sop:
        meta["sop_class"] = sop
    lat = clean_code(_get(ds, "ImageLaterality")) or clean_code(_get(ds, "Laterality"))
    if lat:
        meta["laterality"] = lat
    return MedicalImage(
        pixels=pixels, source=shown, content_hash=content_hash(path), format="dicom",
        modality=clean_code(_get(ds, "Modality")), body_part=clean_code(_get(ds, "BodyPartExamined")),
        view=clean_code(_get(ds, "ViewPosition")), spacing=_spacing(ds), meta=meta,
    )


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
MAX_J2K_TILES = 1 << 16


def _check_codestream(ds, tsyntax, index: int, frames: int, rows: int, cols: int, shown: str, ts_name: str) -> None:
    """Compare the image size that a JPEG / JPEG-LS (SOF) or JPEG 2000 / HTJ2K (SIZ) codestream declares with the
    DICOM header before any decoder sees it. A corrupt stream can declare a far larger image than the DICOM header
    (the decoder then allocates and works for that size: seconds to minutes, gigabytes); such a frame is refused.
    Streams this parser does not recognise are left to the decoder."""
    uid = str(tsyntax or "")
    if not uid.startswith("1.2.840.10008.1.2.4."):
        return
    try:
        from pydicom.encaps import get_frame

        data = _pixel_value(ds)
        if data is None:
            return
        head = bytes(get_frame(data, index, number_of_frames=frames)[:65536]) if frames > 1 else \
            _first_fragment(data)
    except Exception:  # noqa: BLE001 - frame boundaries unreadable: the decoder reports it
        return
    found = _codestream_size(head)
    if found is None:
        return
    height, width, precision, tiles = found
    if width != cols or height != rows:  # (a height of 0, "defined by a later DNL marker", is refused too)
        raise DecodeError(f"the '{ts_name}' stream declares a {height}x{width} image, the DICOM header "
                          f"{rows}x{cols}", path=shown, remedy="the file is probably corrupt")
    if not 1 <= precision <= 38:
        raise DecodeError(f"the '{ts_name}' stream declares {precision}-bit samples", path=shown)
    if tiles > MAX_J2K_TILES:
        raise DecodeError(f"the '{ts_name}' stream declares {tiles} tiles", path=shown)


def _pixel_value(ds):
    try:
        return ds["PixelData"].value if "PixelData" in ds else None
    except Exception:  # noqa: BLE001
        return None


def _first_fragment(data: bytes) -> bytes:
    """Bytes of the first fragment after the Basic Offset Table item (little endian items)."""
    import struct

    if len(data) < 8 or data[:4] != b"\xfe\xff\x00\xe0":
        raise ValueError("no item")
    (bot,) = struct.unpack_from("<I", data, 4)
    i = 8 + bot
    if i + 8 > len(data) or data[i:i + 4] != b"\xfe\xff\x00\xe0":
        raise ValueError("no fragment")
    (n,) = struct.unpack_from("<I", data, i + 4)
    return bytes(data[i + 8:i + 8 + min(n, 65536)])


def _codestream_size(b: bytes) -> tuple[int, int, int, int] | None:
    """(height, width, precision, tiles) from a JPEG / JPEG-LS SOF or a JPEG 2000 SIZ marker segment, else None."""
    import struct

    i = b.find(b"\xff\x4f\xff\x51", 0, 4096)  # J2K: SOC then SIZ
    if i != -1 and i + 4 + 38 + 3 <= len(b):
        _, _, xs, ys, xo, yo, xt, yt, xto, yto, csiz = struct.unpack_from(">HHIIIIIIIIH", b, i + 4)
        if csiz == 0 or xs <= xo or ys <= yo or xt == 0 or yt == 0:
            return (0, -1, 0, 0)  # inconsistent: reported as a size mismatch
        ssiz = b[i + 4 + 38] if i + 4 + 39 <= len(b) else 0
        tiles = (-(-(xs - xto) // xt)) * (-(-(ys - yto) // yt)) if xs > xto and ys > yto else 1
        return (ys - yo, xs - xo, (ssiz & 0x7F) + 1, tiles)
    if not b.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):
            i += 2
            continue
        (length,) = struct.unpack_from(">H", b, i + 2)
        if marker in _JPEG_SOF:
            if i + 9 > len(b):
                return None
            precision, height, width = struct.unpack_from(">BHH", b, i + 4)
            return (height, width, precision, 1)
        if marker == 0xDA or length < 2:  # start of scan before any SOF
            return None
        i += 2 + length
    return None


def _has_pixel_tag_bytes(path: Path) -> bool:
    """True when the file's bytes hold a Pixel Data tag (little or big endian) at an even offset: the parser
    stopped before an element that is there."""
    import mmap

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for pat in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"):
                i = m.find(pat)
                while i != -1:
                    if i % 2 == 0:
                        return True
                    i = m.find(pat, i + 1)
    except (OSError, ValueError):
        return False
    return False


def _is_compressed(tsyntax) -> bool:
    if tsyntax is None:
        return False
    try:
        from pydicom.uid import UID

        u = UID(str(tsyntax))
        return bool(u.is_transfer_syntax and u.is_compressed)
    except Exception:  # noqa: BLE001 - unknown / malformed UID: let the (isolated) decoder refuse it
        return True


def _pixel_bytes(ds) -> int:
    for t in PIXEL_TAGS:
        try:
            if t in ds:
                v = ds[t].value
                return len(v) if v is not None else 0
        except Exception:  # noqa: BLE001
            return 0
    return 0


def _decode_here(ds, index: int | None, shown: str, ts_name: str) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        return np.asarray(pixel_array(ds, index=index))
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # noqa: BLE001 - pyo3's PanicException (Rust RLE decoder) is a BaseException
        raise DecodeError(f"cannot decode '{ts_name}' pixel data: {classify_decode_error(e)} ({type(e).__name__})",
                          path=shown) from None


def _decode_isolated(path: Path, index: int | None, shown: str, ts_name: str) -> np.ndarray:
    from ragmed.io import _isolate

    try:
        return _isolate.decode_frame(str(path), index)
    except _isolate.WorkerError as e:
        raise DecodeError(f"cannot decode '{ts_name}' pixel data: {e.category} ({e.exc_type})", path=shown) from None
    except _isolate.WorkerFailure as e:
        if e.kind == "timeout":
            reason = f"the '{ts_name}' decoder did not finish within {_isolate.timeout_s():g} s"
        elif e.kind == "crash":
            reason = f"the '{ts_name}' decoder crashed ({e.detail})"
        else:
            reason = f"the '{ts_name}' decoder worker failed ({e.detail})"
        raise DecodeError(reason, path=shown, remedy="the file is probably corrupt") from None
    except OSError as e:
        raise DecodeError(f"cannot start the decoder worker ({type(e).__name__})", path=shown) from None


# ----------------------------------------------------------------------------------------------- frames


def frame_positions(ds, n: int) -> list[float] | None:
    """Per-frame position along the slice normal for enhanced multi-frame images, else None."""
    try:
        per = ds.get("PerFrameFunctionalGroupsSequence")
        if not per or len(per) != n:
            return None
        shared = ds.get("SharedFunctionalGroupsSequence")
        shared0 = shared[0] if shared else None
        out = []
        for item in per:
            iop = _first_item_value(item, "PlaneOrientationSequence", "ImageOrientationPatient")
            if iop is None and shared0 is not None:
                iop = _first_item_value(shared0, "PlaneOrientationSequence", "ImageOrientationPatient")
            ipp = _first_item_value(item, "PlanePositionSequence", "ImagePositionPatient")
            if iop is None or ipp is None:
                return None
            out.append(_position(iop, ipp))
        return out
    except Exception:  # noqa: BLE001
        return None


def _first_item_value(item, seq: str, keyword: str):
    s = item.get(seq)
    if not s:
        return None
    return s[0].get(keyword)


def _position(iop, ipp) -> float:
    o = [float(x) for x in iop]
    p = [float(x) for x in ipp]
    if len(o) != 6 or len(p) != 3:
        raise ValueError("geometry")
    normal = np.cross(o[:3], o[3:])
    v = float(np.dot(normal, p))
    if not np.isfinite(v):
        raise ValueError("geometry")
    return v


def middle_of(positions: list[float]) -> int:
    """Index of the first item at the median distinct position (positions rounded to 0.01 mm)."""
    keys = [round(p, 2) for p in positions]
    distinct = sorted(set(keys))
    mid = distinct[len(distinct) // 2]
    return keys.index(mid)


def choose_frame(ds, frame, n: int, shown: str) -> int:
    if frame == "middle":
        if n > 1:
            pos = frame_positions(ds, n)
            if pos is not None:
                return middle_of(pos)
        return n // 2
    if frame == "first":
        return 0
    try:
        i = int(frame)
    except (TypeError, ValueError):
        raise ImageError(f"frame must be 'middle', 'first' or an index, not {frame!r}", path=shown) from None
    if not 0 <= i < n:
        raise ImageError(f"frame {i} out of range 0..{n - 1}", path=shown)
    return i


# ----------------------------------------------------------------------------------------------- display


def _spacing(ds) -> tuple[float, float] | None:
    for kw in ("PixelSpacing", "ImagerPixelSpacing"):
        v = _get(ds, kw)
        if v is not None:
            try:
                r, c = float(v[0]), float(v[1])
                if 0 < r < 1e4 and 0 < c < 1e4:
                    return (r, c)
            except (TypeError, ValueError, IndexError):
                continue
    return None


def _to_display(ds, arr: np.ndarray, pi: str, spp: int) -> np.ndarray:
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    if arr.ndim == 3:
        # pixel_array(as_rgb=True) has already turned YBR_FULL / YBR_FULL_422 into RGB, and the JPEG 2000
        # decoders undo YBR_ICT / YBR_RCT; YBR_PARTIAL_* is converted below.
        if arr.dtype.kind == "f":
            return minmax_normalise(arr, 0, 100)
        bits = _int_or(ds, "BitsStored", arr.dtype.itemsize * 8)
        bits = bits if 0 < bits <= arr.dtype.itemsize * 8 else arr.dtype.itemsize * 8
        rgb = arr.astype(np.float32) / float((1 << bits) - 1)
        if pi in ("YBR_PARTIAL_422", "YBR_PARTIAL_420"):
            rgb = _ybr_partial_to_rgb(rgb)
        return np.clip(rgb, 0, 1).astype(np.float32)
    if pi == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        desc = _get(ds, "RedPaletteColorLookupTableDescriptor")
        bits = int(desc[2]) if desc is not None and len(desc) > 2 and int(desc[2]) in (8, 16) else 16
        if bits == 16 and rgb.max() <= 255:
            bits = 8
        return np.clip(rgb.astype(np.float32) / float((1 << bits) - 1), 0, 1).astype(np.float32)
    try:
        a = apply_modality_lut(arr, ds)
    except Exception:  # noqa: BLE001 - a broken modality LUT: use stored values
        a = arr
    out = _apply_voi(ds, a)
    if out is None:
        out = minmax_normalise(a)
    if pi == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32)


def _ybr_partial_to_rgb(ybr: np.ndarray) -> np.ndarray:
    """YBR_PARTIAL (ITU-R BT.601 studio range: Y 16-235, Cb / Cr 16-240 of 255) in [0, 1] to RGB in [0, 1]
    (PS3.3 C.7.6.3.1.2); pydicom converts only the YBR_FULL variants."""
    y = ybr[..., 0] * 255.0 - 16.0
    cb = ybr[..., 1] * 255.0 - 128.0
    cr = ybr[..., 2] * 255.0 - 128.0
    r = 1.164383 * y + 1.596027 * cr
    g = 1.164383 * y - 0.391762 * cb - 0.812968 * cr
    b = 1.164383 * y + 2.017232 * cb
    return np.stack([r, g, b], axis=-1) / 255.0


def _int_or(ds, keyword: str, default: int) -> int:
    try:
        v = _int(ds, keyword, default)
        return default if v is None else v
    except ValueError:
        return default


def _apply_voi(ds, a: np.ndarray) -> np.ndarray | None:
    """VOI LUT or first window (pydicom), scaled from the transform's full output range to [0, 1]; None if absent."""
    from pydicom.pixels import apply_voi_lut

    has_lut = bool(_get(ds, "VOILUTSequence"))
    has_window = _get(ds, "WindowCenter") is not None and _get(ds, "WindowWidth") is not None
    if not (has_lut or has_window):
        return None
    try:
        v = np.asarray(apply_voi_lut(a, ds, index=0), dtype=np.float64)
        if has_lut:
            ext = np.array([np.iinfo(np.int32).min, np.iinfo(np.int32).max], dtype=np.int64)
        else:
            ext = np.array([-1e30, 1e30], dtype=np.float64)
        try:
            e = np.asarray(apply_voi_lut(ext.astype(a.dtype) if has_lut and a.dtype.kind in "iu" else ext, ds,
                                         index=0), dtype=np.float64)
            lo, hi = float(e.min()), float(e.max())
        except Exception:  # noqa: BLE001
            lo, hi = float(v.min()), float(v.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
            return None
        return np.clip((v - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    except Exception:  # noqa: BLE001 - invalid window / LUT values: fall back to the percentile range
        return None


# ----------------------------------------------------------------------------------------------- series


def read_series(directory: Path, shown: str, *, load, root=None, **options) -> MedicalImage:
    """One representative image of the DICOM series in ``directory``.

    The directory's largest series (by Series Instance UID) is used. Its files are ordered by position along the slice
    normal (Image Position / Orientation (Patient)); the chosen file is the first (lowest Acquisition Number, then
    Instance Number, then file name) at the median distinct position. Without geometry: the middle file by Instance
    Number. A single multi-frame file (enhanced CT / MR) gives its middle frame by position (see
    :func:`choose_frame`). ``MedicalImage.source`` names the chosen file; ``meta`` records the series size.
    """
    import pydicom
    import pydicom.pixels  # noqa: F401

    from ragmed.io._quiet import quiet

    load_image = load  # readers.load_image, passed in (this module never imports readers)

    try:
        files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as e:
        raise ImageError(f"cannot list the series directory ({type(e).__name__})", path=shown) from None
    entries = []
    skipped = 0
    with quiet():
        for p in files:
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
                if "Rows" not in ds or "Columns" not in ds:
                    skipped += 1
                    continue
                series = str(ds.get("SeriesInstanceUID", ""))
                try:
                    pos = _position(ds.ImageOrientationPatient, ds.ImagePositionPatient)
                except Exception:  # noqa: BLE001
                    pos = None
                acq = _int_or(ds, "AcquisitionNumber", 0)
                inst = _int_or(ds, "InstanceNumber", 0)
            except Exception:  # noqa: BLE001 - not a DICOM image: not part of the series
                skipped += 1
                continue
            entries.append((series, pos, acq, inst, p))
    if not entries:
        raise NoPixelDataError("series directory holds no DICOM image", path=shown)
    counts: dict[str, int] = {}
    for e in entries:
        counts[e[0]] = counts.get(e[0], 0) + 1
    best = max(counts, key=lambda s: (counts[s], -min(i for i, e in enumerate(entries) if e[0] == s)))
    members = [e for e in entries if e[0] == best]
    if all(e[1] is not None for e in members):
        members.sort(key=lambda e: (round(e[1], 2), e[2], e[3], e[4].name))
        idx = middle_of([e[1] for e in members])
        n_pos = len({round(e[1], 2) for e in members})
    else:
        members.sort(key=lambda e: (e[3], e[2], e[4].name))
        idx = len(members) // 2
        n_pos = len(members)
    chosen = members[idx][4]
    img = load_image(chosen, root=root, **options)
    meta = dict(img.meta)
    meta.update({"series": shown, "series_files": str(len(members)), "series_positions": str(n_pos),
                 "series_skipped_files": str(skipped + len(entries) - len(members))})
    from dataclasses import replace

    return replace(img, meta=meta)

