"""DICOM reading through pydicom and its pixel-data plugins (pylibjpeg, openjpeg, libjpeg, rle).

De-identification: only an allow-list of attributes that PS3.15's Basic Application Level Confidentiality Profile
keeps (Modality, Body Part Examined, View Position, Pixel Spacing, image-pixel-module attributes) is read out of the
dataset; nothing else leaves this module.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ragmed.errors import (
    BurnedInAnnotationError,
    DecodeError,
    ImageTooLargeError,
    NoPixelDataError,
    UnsupportedFormatError,
)
from ragmed.io.image import MedicalImage, content_hash
from ragmed.io.windowing import minmax_normalise

PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _str(ds, keyword: str) -> str | None:
    v = ds.get(keyword)
    if v is None or v == "":
        return None
    return str(v).strip().upper() or None


def _spacing(ds) -> tuple[float, float] | None:
    for kw in ("PixelSpacing", "ImagerPixelSpacing"):
        v = ds.get(kw)
        if v is not None:
            try:
                r, c = float(v[0]), float(v[1])
                if r > 0 and c > 0:
                    return (r, c)
            except (TypeError, ValueError, IndexError):
                continue
    return None


def read_dicom(path: Path, shown: str, *, allow_burned_in: bool = False, frame="middle",
               max_pixels: int = 1 << 27, sniffed: bool = True) -> MedicalImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, force=not sniffed or True)
    except InvalidDicomError as e:
        raise UnsupportedFormatError("not a DICOM, PNG or JPEG file", path=shown) from e
    except Exception as e:
        raise DecodeError(f"cannot parse DICOM header: {type(e).__name__}", path=shown) from e
    if not any(t in ds for t in PIXEL_TAGS):
        sop = ds.get("SOPClassUID")
        what = getattr(sop, "name", None) or (str(ds.get("Modality")) if "Modality" in ds else "unknown object")
        if not sniffed and len(ds) == 0:
            raise UnsupportedFormatError("not a DICOM, PNG or JPEG file", path=shown)
        raise NoPixelDataError(f"DICOM object has no pixel data ({what})", path=shown)
    burned = _str(ds, "BurnedInAnnotation")
    if burned == "YES" and not allow_burned_in:
        raise BurnedInAnnotationError("flagged BurnedInAnnotation=YES; skipped (allow with --allow-burned-in)", path=shown)
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError) as e:
        raise DecodeError("image pixel module incomplete (Rows/Columns/frames)", path=shown) from e
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise DecodeError(f"invalid image size {rows}x{cols}x{frames}", path=shown)
    if rows * cols * frames * spp > max_pixels:
        raise ImageTooLargeError(f"{rows}x{cols}x{frames}x{spp} samples exceeds the limit of {max_pixels}", path=shown)
    index = _frame_index(frame, frames)
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        if frames > 1:
            arr = ds.pixel_array_frame(index) if hasattr(ds, "pixel_array_frame") else None
            if arr is None:
                from pydicom.pixels import pixel_array

                arr = pixel_array(ds, index=index)
        else:
            arr = ds.pixel_array
    except Exception as e:
        name = getattr(tsyntax, "name", None) or "unknown transfer syntax"
        raise DecodeError(f"cannot decode '{name}' pixel data: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}",
                          path=shown) from e
    pixels = _to_display(ds, np.asarray(arr), shown)
    meta = {"frames": str(frames), "frame": str(index)}
    if tsyntax is not None:
        meta["transfer_syntax"] = getattr(tsyntax, "name", str(tsyntax))
    pi = _str(ds, "PhotometricInterpretation")
    if pi:
        meta["photometric"] = pi
    return MedicalImage(
        pixels=pixels, source=shown, content_hash=content_hash(path), format="dicom",
        modality=_str(ds, "Modality"), body_part=_str(ds, "BodyPartExamined"), view=_str(ds, "ViewPosition"),
        spacing=_spacing(ds), meta=meta,
    )


def _frame_index(frame, n: int) -> int:
    if frame == "middle":
        return n // 2
    if frame == "first":
        return 0
    i = int(frame)
    if not 0 <= i < n:
        raise ValueError(f"frame {i} out of range 0..{n - 1}")
    return i


def _to_display(ds, arr: np.ndarray, shown: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, convert_color_space

    pi = _str(ds, "PhotometricInterpretation") or ""
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if spp == 3 or arr.ndim == 3 and arr.shape[-1] == 3:
        if pi.startswith("YBR") and pi not in ("YBR_RCT", "YBR_ICT"):
            try:
                arr = convert_color_space(arr, pi, "RGB")
            except Exception:
                pass
        a = arr.astype(np.float32)
        bits = int(ds.get("BitsStored", 8) or 8)
        out = a / float((1 << bits) - 1) if bits > 0 else minmax_normalise(a)
        return np.clip(out, 0, 1).astype(np.float32)
    if pi == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(arr, ds).astype(np.float32)
        return minmax_normalise(rgb, 0, 100)
    a = apply_modality_lut(arr, ds)
    has_voi = "WindowCenter" in ds or "VOILUTSequence" in ds
    if has_voi:
        try:
            v = apply_voi_lut(a, ds, index=0)
            out = minmax_normalise(v, 0, 100)
        except Exception:
            out = minmax_normalise(a)
    else:
        out = minmax_normalise(a)
    if pi == "MONOCHROME1":
        out = 1.0 - out
    if out.ndim != 2:
        raise DecodeError(f"unexpected pixel array shape {out.shape}", path=shown)
    return out.astype(np.float32)


def read_series(directory: Path, shown: str, *, root=None, **options) -> MedicalImage:
    """Middle slice of a single-frame series (sorted by ImagePositionPatient along the normal, else InstanceNumber)."""
    import pydicom

    files = sorted(p for p in directory.iterdir() if p.is_file())
    if not files:
        raise UnsupportedFormatError("series directory has no files", path=shown)
    keyed = []
    for p in files:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
        except Exception:
            continue
        if "Rows" not in ds:
            continue
        pos, inst = None, None
        try:
            ipp = [float(x) for x in ds.ImagePositionPatient]
            iop = [float(x) for x in ds.ImageOrientationPatient]
            normal = np.cross(iop[:3], iop[3:])
            pos = float(np.dot(normal, ipp))
        except Exception:
            pass
        try:
            inst = int(ds.InstanceNumber)
        except Exception:
            pass
        keyed.append((pos, inst, p))
    if not keyed:
        raise NoPixelDataError("series directory has no DICOM images", path=shown)
    if all(k[0] is not None for k in keyed):
        keyed.sort(key=lambda k: k[0])
    else:
        keyed.sort(key=lambda k: (k[1] if k[1] is not None else 0, str(k[2])))
    chosen = keyed[len(keyed) // 2][2]
    from ragmed.io.readers import load_image

    img = load_image(chosen, root=root, **options)
    img.meta["series_slices"] = str(len(keyed))
    return img
