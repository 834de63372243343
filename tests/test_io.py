"""ragmed.io: real files (pydicom's test files, pydicom-data's NEMA samples, ../shared/data/dicom), tiny DICOMs
written here with pydicom, PNG / JPEG written with Pillow, and the no-PHI guarantees."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from ragmed.errors import (
    BurnedInAnnotationError,
    DecodeError,
    ImageError,
    ImageTooLargeError,
    NoPixelDataError,
    RagmedError,
    UnsupportedFormatError,
)
from ragmed.io import MedicalImage, load_image, load_series
from tests.conftest import DATA, data_path

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

PHI = {
    "PatientName": "Zyxwvutson^Quentin",
    "PatientID": "PID-93847561",
    "PatientBirthDate": "19450317",
    "AccessionNumber": "ACC7731902",
    "InstitutionName": "Saint Elsewhere Memorial",
    "ReferringPhysicianName": "Hollowmere^Beatrix",
    "OtherPatientIDs": "OPID-55120934",
    "StudyDescription": "follow-up Zyxwvutson",
}
PRIVATE_VALUE = "Privately-Kept-Secret-8812"
PHI_STRINGS = [*PHI.values(), "Zyxwvutson", "Quentin", "Hollowmere", PRIVATE_VALUE]


def pydicom_file(name: str) -> str:
    p = get_testdata_file(name, download=False)
    if p is None:
        pytest.skip(f"pydicom test file {name} not installed (pip install pydicom-data)")
    return str(p)


def write_dicom(path: Path, pixels: np.ndarray, *, phi: bool = True, photometric: str | None = None,
                frames: int | None = None, bits_stored: int | None = None, **attrs) -> Path:
    """A minimal, valid Secondary Capture file (explicit VR little endian) with ``pixels`` and ``attrs``."""
    arr = np.ascontiguousarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    if phi:
        for k, v in PHI.items():
            setattr(ds, k, v)
        ds.private_block(0x0011, "ACME PHI STORE", create=True).add_new(0x01, "LO", PRIVATE_VALUE)
    color = arr.ndim == (4 if frames else 3)
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = photometric or ("RGB" if color else "MONOCHROME2")
    if color:
        ds.PlanarConfiguration = 0
    shape = arr.shape[1:] if frames else arr.shape
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    if frames:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored or arr.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(h=16, w=16, dtype=np.uint16, top=4095):
    return (np.arange(h * w).reshape(h, w) * top // (h * w - 1)).astype(dtype)


# ----------------------------------------------------------------------------------------------- real files


def test_ct_small_window_matches_the_dicom_formula():
    """CT_small: stored -> HU by slope/intercept; no window in the file, so the 0.5-99.5 percentile range."""
    path = pydicom_file("CT_small.dcm")
    img = load_image(path)
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    hu = raw * 1.0 - 1024.0
    lo, hi = np.percentile(hu, [0.5, 99.5])
    expected = np.clip((hu - lo) / (hi - lo), 0, 1)
    assert img.shape == (128, 128) and img.pixels.dtype == np.float32
    assert np.abs(img.pixels - expected).max() < 1e-5
    assert (img.modality, img.spacing, img.format) == ("CT", (0.661468, 0.661468), "dicom")


def test_mr_small_window_centre_width():
    path = pydicom_file("MR_small.dcm")  # WindowCenter 600, WindowWidth 1600, 16-bit signed
    img = load_image(path)
    x = pydicom.dcmread(path).pixel_array.astype(np.float64)
    c, w = 600.0, 1600.0
    expected = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)  # PS3.3 C.11.2.1.2.1, linear
    assert np.abs(img.pixels - expected).max() < 1e-4


@pytest.mark.parametrize("variant", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                     "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_expb.dcm",
                                     "MR_small_padded.dcm"])
def test_lossless_encodings_give_identical_pixels(variant):
    ref = load_image(pydicom_file("MR_small.dcm"))
    img = load_image(pydicom_file(variant))
    assert np.array_equal(img.pixels, ref.pixels), variant


def test_cr_chest_monochrome1_is_inverted_and_isolated_decode_matches():
    path = pydicom_file("RG1_J2KI.dcm")  # pydicom-data: CR chest, JPEG 2000, MONOCHROME1, window 15000/30000
    img = load_image(path)
    same = load_image(path, isolate="never")
    assert np.array_equal(img.pixels, same.pixels)
    assert img.shape == (1955, 1841) and img.modality == "CR" and img.body_part == "CHEST" and img.view == "PA"
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    c, w = 15000.0, 30000.0
    expected = 1.0 - np.clip((raw - (c - 0.5)) / (w - 1) + 0.5, 0, 1)  # MONOCHROME1: high stored value = dark
    assert np.abs(img.pixels - expected).max() < 1e-4
    assert img.meta["photometric"] == "MONOCHROME1" and img.meta["transfer_syntax"] == "JPEG 2000 Image Compression"


BAR_COLOURS = {5: (1, 0, 0), 25: (0, 1, 0), 45: (0, 0, 1), 65: (0, 0, 0), 95: (1, 1, 1)}


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm",
                                  "SC_rgb_dcmtk_+eb+cr.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm",
                                  "SC_rgb_rle_16bit.dcm", "SC_rgb_rle_32bit.dcm", "SC_ybr_full_422_uncompressed.dcm",
                                  "SC_rgb_jls_lossy_sample.dcm", "SC_rgb_gdcm_KY.dcm"])
def test_colour_bars_rgb_and_ybr(name):
    """pydicom's colour-bar files (RGB, YBR_FULL, YBR_FULL_422; JPEG, JPEG-LS, RLE, native) all come out RGB."""
    img = load_image(pydicom_file(name))
    assert img.shape == (100, 100, 3) and img.is_color
    for row, rgb in BAR_COLOURS.items():
        assert np.abs(img.pixels[row, 50] - np.array(rgb)).max() < 0.08, (name, row, img.pixels[row, 50])


def test_ybr_rct_jpeg2000_ultrasound_matches_pydicom_rgb():
    path = pydicom_file("US1_J2KR.dcm")
    img = load_image(path)
    ref = pydicom.dcmread(path).pixel_array.astype(np.float32) / 255.0
    assert img.shape == (480, 640, 3) and np.abs(img.pixels - ref).max() < 1e-6


def test_palette_colour_goes_through_the_lut():
    from pydicom.pixels import apply_color_lut

    path = pydicom_file("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    img = load_image(path)
    lut = apply_color_lut(ds.pixel_array, ds).astype(np.float32)
    bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    assert img.shape == (350, 800, 3)
    assert np.abs(img.pixels - lut / ((1 << bits) - 1 if lut.max() > 255 else 255)).max() < 1e-5


def test_multiframe_ybr_takes_the_middle_frame():
    path = pydicom_file("examples_ybr_color.dcm")  # 30 frames, JPEG baseline YBR_FULL_422
    img = load_image(path)
    assert img.meta["frames"] == "30" and img.meta["frame"] == "15"
    from pydicom.pixels import pixel_array

    ref = pixel_array(path, index=15).astype(np.float32) / 255.0
    assert np.abs(img.pixels - ref).max() < 1e-6
    first = load_image(path, frame="first")
    assert first.meta["frame"] == "0" and not np.array_equal(first.pixels, img.pixels)


def test_voi_lut_sequence_is_applied():
    path = pydicom_file("vlut_04.dcm")
    from pydicom.pixels import apply_voi_lut

    ds = pydicom.dcmread(path)
    v = apply_voi_lut(ds.pixel_array, ds).astype(np.float64)
    img = load_image(path)
    lut_max = float(max(ds.VOILUTSequence[0].LUTData))
    lut_min = float(min(ds.VOILUTSequence[0].LUTData))
    assert np.abs(img.pixels - (v - lut_min) / (lut_max - lut_min)).max() < 1e-5


def test_modality_lut_sequence_is_applied():
    path = pydicom_file("mlut_18.dcm")
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(path)
    m = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    lo, hi = np.percentile(m, [0.5, 99.5])
    img = load_image(path)
    assert np.abs(img.pixels - np.clip((m - lo) / (hi - lo), 0, 1)).max() < 1e-5


@pytest.mark.parametrize("name,cls", [
    ("rtplan.dcm", NoPixelDataError), ("test-SR.dcm", NoPixelDataError), ("rtstruct.dcm", NoPixelDataError),
    ("MR_truncated.dcm", DecodeError), ("JPEG2000-embedded-sequence-delimiter.dcm", DecodeError),
])
def test_pydicom_files_that_cannot_load_raise_typed_errors(name, cls):
    path = Path(pydicom_file(name))
    with pytest.raises(cls) as ei:
        load_image(path, root=path.parent)
    assert str(ei.value).startswith(name + ": ")


# ----------------------------------------------------------------------------------------------- shared data


def _shared_dicom_files() -> list[str]:
    root = DATA / "dicom"
    if not root.is_dir():
        return ["<shared data absent>"]
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _pydicom_decodes(path: Path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True)
            ds.pixel_array
            return True
        except Exception:  # noqa: BLE001
            return False


@pytest.mark.parametrize("rel", _shared_dicom_files())
def test_every_shared_dicom_loads_or_raises_a_typed_error(rel):
    root = data_path("dicom")
    path = root / rel
    try:
        img = load_image(path, root=root)
    except RagmedError as e:
        assert isinstance(e, ImageError)
        assert str(e).startswith(rel + ": ") and str(root) not in str(e)
        assert not _pydicom_decodes(path), f"pydicom decodes {rel} but load_image refused it: {e}"
        return
    assert isinstance(img, MedicalImage) and img.source == rel
    px = img.pixels
    assert px.dtype == np.float32 and px.ndim in (2, 3) and np.isfinite(px).all()
    assert px.min() >= 0 and px.max() <= 1
    assert len(img.content_hash) == 64


def test_shared_enhanced_mr_series_gives_the_middle_frame_by_position():
    d = data_path("dicom", "series", "dcm_qa_xa30", "In", "5_anat-T1w_acq-tfl")
    img = load_series(d, root=d.parent)
    f = next(p for p in d.iterdir() if p.suffix == ".dcm")
    ds = pydicom.dcmread(f)
    pos = []
    for fr in ds.PerFrameFunctionalGroupsSequence:
        ori = fr.get("PlaneOrientationSequence") or ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
        iop = [float(x) for x in ori[0].ImageOrientationPatient]
        ipp = [float(x) for x in fr.PlanePositionSequence[0].ImagePositionPatient]
        pos.append(float(np.dot(np.cross(iop[:3], iop[3:]), ipp)))
    order = np.argsort(pos, kind="stable")
    assert int(img.meta["frame"]) == int(order[len(order) // 2])
    assert img.meta["frames"] == "96" and img.shape == (128, 128) and img.modality == "MR"
    assert img.meta["sop_class"] == "Enhanced MR Image Storage"


def test_shared_epi_series_middle_slice_first_volume():
    d = data_path("dicom", "series", "dcm_qa_nih", "In", "20180918GE", "mr_0004")
    img = load_image(d, root=d.parent)  # a directory goes to load_series
    assert img.meta["series_files"] == "150" and img.meta["series_positions"] == "15"
    rows = []
    for p in d.glob("*.dcm"):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        iop = [float(x) for x in ds.ImageOrientationPatient]
        z = float(np.dot(np.cross(iop[:3], iop[3:]), [float(x) for x in ds.ImagePositionPatient]))
        rows.append((round(z, 2), int(ds.get("AcquisitionNumber", 0) or 0), int(ds.InstanceNumber), p.name))
    zs = sorted({r[0] for r in rows})
    want = min(r for r in rows if r[0] == zs[len(zs) // 2])
    assert img.source == f"mr_0004/{want[3]}"


def test_shared_ct_three_slices_gives_the_middle_one():
    d = data_path("dicom", "series", "dcmqi_ct3slice")
    img = load_series(d)
    zs = {}
    for p in d.glob("*.dcm"):
        zs[p.name] = float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2])
    middle = sorted(zs, key=zs.get)[1]
    assert img.source.endswith(middle) and img.modality == "CT" and img.shape == (512, 512)


# ----------------------------------------------------------------------------------------------- tiny DICOMs


def test_monochrome1_inversion(tmp_path):
    a = ramp()
    p1 = write_dicom(tmp_path / "m1.dcm", a, photometric="MONOCHROME1", bits_stored=12)
    p2 = write_dicom(tmp_path / "m2.dcm", a, photometric="MONOCHROME2", bits_stored=12)
    i1, i2 = load_image(p1), load_image(p2)
    assert np.allclose(i1.pixels, 1.0 - i2.pixels)
    assert i1.pixels[0, 0] == pytest.approx(1.0) and i2.pixels[-1, -1] == pytest.approx(1.0)


def test_rescale_slope_intercept_then_window(tmp_path):
    a = ramp(32, 32, top=4095)
    p = write_dicom(tmp_path / "ct.dcm", a, bits_stored=12, RescaleSlope="2", RescaleIntercept="-1024",
                    WindowCenter="40", WindowWidth="400")
    img = load_image(p)
    hu = a.astype(np.float64) * 2 - 1024
    expected = np.clip((hu - 39.5) / 399 + 0.5, 0, 1)
    assert np.abs(img.pixels - expected).max() < 1e-4
    assert img.pixels.min() == 0 and img.pixels.max() == 1  # the window clips both ends


def test_several_windows_use_the_first(tmp_path):
    a = ramp(top=1000)
    img = load_image(write_dicom(tmp_path / "w.dcm", a, WindowCenter=["500", "100"], WindowWidth=["1000", "50"]))
    expected = np.clip((a - 499.5) / 999 + 0.5, 0, 1)
    assert np.abs(img.pixels - expected).max() < 1e-4


def test_invalid_window_falls_back_to_percentiles(tmp_path):
    a = ramp(top=1000)
    img = load_image(write_dicom(tmp_path / "w0.dcm", a, WindowCenter="500", WindowWidth="0"))
    lo, hi = np.percentile(a.astype(np.float64), [0.5, 99.5])
    assert np.abs(img.pixels - np.clip((a - lo) / (hi - lo), 0, 1)).max() < 1e-5


def test_multiframe_frame_choice(tmp_path):
    frames = np.stack([np.full((8, 8), 100 * (k + 1), np.uint16) for k in range(5)])
    frames[:, 0, 0] = 0  # each frame has contrast
    p = write_dicom(tmp_path / "mf.dcm", frames, frames=5)
    mid = load_image(p)
    assert mid.meta["frame"] == "2" and mid.pixels[4, 4] == pytest.approx(1.0)
    assert load_image(p, frame="first").meta["frame"] == "0"
    assert load_image(p, frame=4).meta["frame"] == "4"
    with pytest.raises(ImageError, match="out of range"):
        load_image(p, frame=9)


def test_enhanced_multiframe_middle_is_by_position_not_index(tmp_path):
    n = 5
    frames = np.stack([np.full((8, 8), 10 * (k + 1), np.uint16) for k in range(n)])
    frames[:, 0, 0] = 0
    per = []
    zs = [40.0, 0.0, 30.0, 10.0, 20.0]  # frame 4 (z=20) is the middle slice; index n//2 would be frame 2 (z=30)
    for z in zs:
        item, pos, ori = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = [0, 0, z]
        ori.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        item.PlanePositionSequence = [pos]
        item.PlaneOrientationSequence = [ori]
        per.append(item)
    p = write_dicom(tmp_path / "enh.dcm", frames, frames=n, PerFrameFunctionalGroupsSequence=per)
    assert load_image(p).meta["frame"] == "4"


def test_ybr_full_native_is_converted_to_rgb(tmp_path):
    # pure red in YBR_FULL (ITU-R BT.601 full range): Y=76, Cb=85, Cr=255
    ybr = np.zeros((4, 4, 3), np.uint8)
    ybr[...] = (76, 85, 255)
    img = load_image(write_dicom(tmp_path / "ybr.dcm", ybr, photometric="YBR_FULL"))
    assert img.is_color and np.abs(img.pixels[0, 0] - np.array([1.0, 0.0, 0.0])).max() < 0.02


def test_ybr_partial_is_converted_to_rgb(tmp_path):
    # pure red in YBR_PARTIAL (BT.601 studio range): Y=82, Cb=90, Cr=240
    ybr = np.zeros((4, 4, 3), np.uint8)
    ybr[...] = (82, 90, 240)
    img = load_image(write_dicom(tmp_path / "ybrp.dcm", ybr, photometric="YBR_PARTIAL_422"))
    assert np.abs(img.pixels[0, 0] - np.array([1.0, 0.0, 0.0])).max() < 0.02


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEG2000Lossless", "JPEG2000"])
def test_compressed_by_pydicom_round_trip(tmp_path, syntax):
    """Files compressed here with pydicom's encoders (pylibjpeg-rle, pylibjpeg-openjpeg) decode like the original."""
    import pydicom.uid

    a = (np.arange(64 * 64).reshape(64, 64) * 7 % 4096).astype(np.uint16)
    native = write_dicom(tmp_path / "native.dcm", a, bits_stored=12)
    ds = pydicom.dcmread(native)
    uid = getattr(pydicom.uid, syntax)
    ds.compress(uid, **({"j2k_cr": [10]} if syntax == "JPEG2000" else {}))
    p = tmp_path / f"{syntax}.dcm"
    ds.save_as(p)
    img, ref = load_image(p), load_image(native)
    assert img.meta["transfer_syntax"] == uid.name
    if syntax == "JPEG2000":  # lossy
        assert np.abs(img.pixels - ref.pixels).mean() < 0.02
    else:
        assert np.array_equal(img.pixels, ref.pixels)


def test_series_directory_of_written_slices(tmp_path):
    d = tmp_path / "series"
    d.mkdir()
    series = generate_uid()
    for k, z in enumerate([5.0, -5.0, 15.0, 0.0, 10.0]):  # file order is not slice order
        a = np.full((8, 8), k + 1, np.uint16)
        a[0, 0] = 0
        write_dicom(d / f"f{k}.dcm", a, SeriesInstanceUID=series, ImagePositionPatient=[0, 0, z],
                    ImageOrientationPatient=[1, 0, 0, 0, 1, 0], InstanceNumber=k + 1)
    (d / "notes.txt").write_text("not dicom")
    img = load_image(d, root=tmp_path)
    # z sorted: -5 (f1), 0 (f3), 5 (f0), 10 (f4), 15 (f2) -> the middle is f0
    assert img.source == os.path.join("series", "f0.dcm")
    assert img.meta["series_files"] == "5" and img.meta["series_skipped_files"] == "1"


def test_burned_in_annotation_is_skipped_unless_allowed(tmp_path):
    p = write_dicom(tmp_path / "burn.dcm", ramp(), BurnedInAnnotation="YES")
    with pytest.raises(BurnedInAnnotationError) as ei:
        load_image(p, root=tmp_path)
    assert str(ei.value).startswith("burn.dcm: ")
    assert load_image(p, allow_burned_in=True).shape == (16, 16)
    assert load_image(write_dicom(tmp_path / "ok.dcm", ramp(), BurnedInAnnotation="NO")).shape == (16, 16)


def test_too_large_is_refused_before_decoding(tmp_path):
    p = write_dicom(tmp_path / "big.dcm", ramp())
    ds = pydicom.dcmread(p)
    ds.Rows, ds.Columns = 60000, 60000  # pixel data stays 512 bytes
    ds.save_as(p)
    with pytest.raises(ImageTooLargeError):
        load_image(p)
    with pytest.raises(ImageTooLargeError):
        load_image(write_dicom(tmp_path / "small.dcm", ramp()), max_pixels=100)


def test_header_declaring_more_than_the_pixel_data_holds(tmp_path):
    p = write_dicom(tmp_path / "short.dcm", ramp())
    ds = pydicom.dcmread(p)
    ds.NumberOfFrames = 2_000_000_000
    ds.save_as(p)
    with pytest.raises(DecodeError, match="pixel data holds"):
        load_image(p)


def test_compressed_with_absurd_frame_count(tmp_path):
    ds = pydicom.dcmread(pydicom_file("MR_small_RLE.dcm"))
    ds.NumberOfFrames = 999_999_999
    p = tmp_path / "rle.dcm"
    ds.save_as(p)
    with pytest.raises(DecodeError, match="NumberOfFrames"):
        load_image(p, root=tmp_path)


def test_not_an_image(tmp_path):
    (tmp_path / "note.dcm").write_text("this is a text file named like a DICOM\n" * 20)
    with pytest.raises(UnsupportedFormatError) as ei:
        load_image(tmp_path / "note.dcm", root=tmp_path)
    assert str(ei.value) == "note.dcm: not a DICOM, PNG or JPEG file"
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UnsupportedFormatError, match="empty file"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "missing.dcm")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.dcm")  # reading it would block forever
        with pytest.raises(UnsupportedFormatError, match="not a regular file"):
            load_image(tmp_path / "pipe.dcm")
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    with pytest.raises(NoPixelDataError):
        load_image(empty_dir)


def test_truncated_compressed_file_is_a_decode_error(tmp_path):
    data = Path(pydicom_file("JPEG2000.dcm")).read_bytes()
    p = tmp_path / "cut.dcm"
    p.write_bytes(data[: len(data) - 150])  # cut inside the JPEG 2000 codestream
    with pytest.raises(DecodeError) as ei:
        load_image(p, root=tmp_path)
    assert str(ei.value).startswith("cut.dcm: ")


# ----------------------------------------------------------------------------------------------- isolation


def test_decoder_timeout_and_crash_are_contained(tmp_path, monkeypatch):
    from ragmed.io import _isolate

    path = pydicom_file("RG1_J2KI.dcm")
    _isolate.shutdown()
    monkeypatch.setenv("RAGMED_DECODE_TIMEOUT", "0.001")
    with pytest.raises(DecodeError, match="did not finish"):
        load_image(path)
    monkeypatch.delenv("RAGMED_DECODE_TIMEOUT")
    _isolate.shutdown()
    monkeypatch.setenv("RAGMED_DECODE_MEMORY_MB", "16")  # the worker cannot even start: it dies
    with pytest.raises(DecodeError, match="crashed"):
        load_image(path)
    monkeypatch.delenv("RAGMED_DECODE_MEMORY_MB")
    _isolate.shutdown()
    assert load_image(path).shape == (1955, 1841)  # a fresh worker works again


def test_rust_decoder_panic_is_a_typed_error_in_and_out_of_process(tmp_path):
    """Four bit flips in MR_small_RLE make pylibjpeg-rle panic (pyo3 PanicException, a BaseException)."""
    data = bytearray(Path(pydicom_file("MR_small_RLE.dcm")).read_bytes())
    for offset, xor in ((1513, 32), (1798, 16), (4501, 128), (6840, 1)):
        data[offset] ^= xor
    p = tmp_path / "panic.dcm"
    p.write_bytes(bytes(data))
    with pytest.raises(BaseException) as raw:  # the hazard is real
        pydicom.dcmread(p).pixel_array
    assert not isinstance(raw.value, Exception)
    for mode in ("auto", "never"):
        with pytest.raises(DecodeError, match="RLE Lossless"):
            load_image(p, root=tmp_path, isolate=mode)


@pytest.mark.parametrize("name,marker,offset,value", [
    ("MR_small_jp2klossless.dcm", b"\xff\x4f\xff\x51", 8, (60000).to_bytes(4, "big")),  # SIZ Xsiz
    ("MR_small_jp2klossless.dcm", b"\xff\x4f\xff\x51", 12, (60000).to_bytes(4, "big")),  # SIZ Ysiz
    ("MR_small_jpeg_ls_lossless.dcm", b"\xff\xf7", 5, (65535).to_bytes(2, "big")),  # JPEG-LS SOF lines
    ("MR_small_jpeg_ls_lossless.dcm", b"\xff\xf7", 5, (0).to_bytes(2, "big")),  # lines "defined later"
    ("JPEG-lossy.dcm", b"\xff\xc1", 7, (9999).to_bytes(2, "big")),  # JPEG SOF samples per line
])
def test_codestream_that_lies_about_its_size_is_refused_before_decoding(tmp_path, name, marker, offset, value):
    data = bytearray(Path(pydicom_file(name)).read_bytes())
    i = data.find(marker, data.find(b"\xe0\x7f\x10\x00"))
    assert i > 0
    data[i + offset:i + offset + len(value)] = value
    p = tmp_path / "lie.dcm"
    p.write_bytes(bytes(data))
    for mode in ("auto", "never"):
        with pytest.raises(DecodeError, match="stream declares"):
            load_image(p, root=tmp_path, isolate=mode)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_forked_child_does_not_share_the_parents_decoder_worker():
    p = pydicom_file("JPEG2000.dcm")
    ref = load_image(p).pixels  # the parent now holds an idle worker
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            code = 0 if np.array_equal(load_image(p).pixels, ref) else 3
        except BaseException:  # noqa: BLE001
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert np.array_equal(load_image(p).pixels, ref)  # the parent's worker still answers the parent


def test_isolate_option(tmp_path):
    p = pydicom_file("JPEG2000.dcm")
    assert np.array_equal(load_image(p, isolate="always").pixels, load_image(p, isolate="never").pixels)
    with pytest.raises(ImageError, match="isolate"):
        load_image(p, isolate="sometimes")


def test_import_ragmed_io_is_light():
    code = "import sys, ragmed.io; print(sorted(m for m in ('torch', 'faiss', 'pydicom', 'PIL') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


# ----------------------------------------------------------------------------------------------- PNG / JPEG


def test_png_8bit_gray(tmp_path):
    from PIL import Image

    a = (np.arange(256, dtype=np.uint8).reshape(16, 16))
    Image.fromarray(a).save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.format == "png" and img.shape == (16, 16) and np.allclose(img.pixels, a / 255.0)


def test_png_16bit_gray_keeps_12bit_contrast(tmp_path):
    from PIL import Image

    a = ramp(16, 16, np.uint16, 4095)
    Image.fromarray(a).save(tmp_path / "g16.png")
    img = load_image(tmp_path / "g16.png")
    assert img.meta["bit_depth"] == "16" and np.allclose(img.pixels, a / 4095.0, atol=1e-6)


def test_jpeg_colour_and_gray_rgb(tmp_path):
    from PIL import Image

    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:16, :, 0] = 255
    rgb[16:, :, 2] = 255
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    img = load_image(tmp_path / "c.jpg")
    assert img.format == "jpeg" and img.is_color
    assert np.abs(img.pixels[4, 4] - [1, 0, 0]).max() < 0.05 and np.abs(img.pixels[28, 4] - [0, 0, 1]).max() < 0.05
    gray = np.repeat(ramp(32, 32, np.uint8, 255)[..., None], 3, axis=2)
    Image.fromarray(gray).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").pixels.ndim == 2  # equal channels -> grayscale


def test_jpeg_gray_8bit(tmp_path):
    from PIL import Image

    Image.fromarray(ramp(32, 32, np.uint8, 255)).save(tmp_path / "g.jpg", quality=100)
    img = load_image(tmp_path / "g.jpg")
    assert img.shape == (32, 32) and abs(float(img.pixels[-1, -1]) - 1.0) < 0.03


def test_corrupt_png_error_names_relative_path_only(tmp_path):
    from PIL import Image

    root = tmp_path / "Zyxwvutson_Quentin_studies"
    root.mkdir()
    Image.fromarray(ramp(64, 64, np.uint8, 255)).save(root / "x.png")
    data = (root / "x.png").read_bytes()
    (root / "x.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError) as ei:
        load_image(root / "x.png", root=root)
    assert str(ei.value).startswith("x.png: ") and "Zyxwvutson" not in str(ei.value)


# ----------------------------------------------------------------------------------------------- no PHI


def _assert_no_phi(text: str):
    for v in PHI_STRINGS:
        assert v not in text, f"PHI value {v!r} leaked: {text[:300]}"


def test_no_phi_in_medical_image(tmp_path):
    p = write_dicom(tmp_path / "phi.dcm", ramp(), BodyPartExamined="CHEST", ViewPosition="PA",
                    PixelSpacing=["0.5", "0.5"])
    img = load_image(p, root=tmp_path)
    text = " ".join([repr(img), repr(img.meta), str(img.source), str(img.modality), str(img.body_part),
                     str(img.view), str(img.spacing), img.content_hash, img.format])
    _assert_no_phi(text)
    assert (img.body_part, img.view, img.spacing) == ("CHEST", "PA", (0.5, 0.5))
    assert set(img.meta) <= {"frames", "frame", "transfer_syntax", "photometric", "sop_class", "laterality"}


@pytest.mark.filterwarnings("ignore::UserWarning")  # the test's own writes of invalid values
@pytest.mark.parametrize("breakage", ["truncate", "bad_date", "huge_rows", "burned_in", "no_pixels", "bad_vr",
                                      "name_in_read_attribute"])
def test_no_phi_in_errors_warnings_or_logs(tmp_path, caplog, capfd, breakage):
    caplog.set_level(logging.DEBUG)
    root = tmp_path / "corpus"
    root.mkdir()
    p = root / "case.dcm"
    extra = {}
    if breakage == "burned_in":
        extra["BurnedInAnnotation"] = "YES"
    write_dicom(p, ramp(), **extra)
    ds = pydicom.dcmread(p)
    if breakage == "bad_date":
        ds.AcquisitionDate = PHI["PatientName"]  # an invalid DA value that is a name: pydicom would quote it
        ds.ContentTime = PHI["AccessionNumber"]
        ds.Rows = 0
    elif breakage == "name_in_read_attribute":
        # attributes load_image reads, holding invalid values that are identifiers: pydicom's validation warning
        # quotes them ("Invalid value for VR IS: 'Zyxwvutson^Quentin'") when they are read
        from pydicom.dataelem import RawDataElement
        from pydicom.tag import Tag

        name = PHI["PatientName"].encode()
        ds[0x00280008] = RawDataElement(Tag(0x00280008), "IS", len(name), name, 0, False, True)
        ds[0x00280030] = RawDataElement(Tag(0x00280030), "DS", 12, b"Hollowmere\\1", 0, False, True)
    elif breakage == "huge_rows":
        ds.Rows = 65535
        ds.Columns = 65535
    elif breakage == "no_pixels":
        del ds.PixelData
    elif breakage == "bad_vr":
        from pydicom.dataelem import DataElement

        ds.add(DataElement(0x00081030, "DA", PHI["PatientName"]))  # StudyDescription written with a wrong VR
        ds.Rows = 0
    ds.save_as(p)
    if breakage == "truncate":
        data = p.read_bytes()
        p.write_bytes(data[: len(data) - 100])
    if breakage == "name_in_read_attribute":  # the hazard is real: plain pydicom quotes the value
        with warnings.catch_warnings(record=True) as raw:
            warnings.simplefilter("always")
            pydicom.dcmread(p).get("NumberOfFrames")
        assert any(PHI["PatientName"] in str(w.message) for w in raw)
    caplog.clear()
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageError) as ei:
            load_image(p, root=root)
    msg = str(ei.value)
    assert msg.startswith("case.dcm: ") and str(root) not in msg
    _assert_no_phi(msg)
    _assert_no_phi(repr(ei.value.args))
    _assert_no_phi(" ".join(str(w.message) for w in caught))
    _assert_no_phi(caplog.text)
    out, err = capfd.readouterr()
    _assert_no_phi(out + err)
    assert ei.value.__cause__ is None or "Zyxwvutson" not in str(ei.value.__cause__)


def test_no_phi_from_a_real_file_with_identifiers(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    src = pydicom_file("SC_rgb_small_odd.dcm")  # PatientName Lestrade^G
    name = str(pydicom.dcmread(src).PatientName)
    img = load_image(src)
    assert name not in repr(img) + repr(img.meta) and "Lestrade" not in caplog.text


def test_concurrent_loads_match_sequential_and_restore_warning_state(tmp_path):
    import concurrent.futures as cf

    names = ["CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "rtplan.dcm",
             "MR_small_jpeg_ls_lossless.dcm", "examples_ybr_color.dcm", "MR_truncated.dcm"] * 3
    paths = [pydicom_file(n) for n in names]

    def one(p):
        try:
            img = load_image(p)
            return img.content_hash, float(img.pixels.sum())
        except ImageError as e:
            return type(e).__name__, str(e)

    load_image(paths[0])
    before = (list(warnings.filters), warnings.showwarning)
    sequential = [one(p) for p in paths]
    with cf.ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(one, paths))
    assert parallel == sequential
    assert (list(warnings.filters), warnings.showwarning) == before
    with pytest.warns(UserWarning, match="still shown"):
        warnings.warn("still shown", UserWarning)


def test_logging_of_other_libraries_still_works_after_reads(caplog):
    caplog.set_level(logging.WARNING)
    caplog.set_level(logging.WARNING, logger="pydicom")  # the CLI quiets pydicom; tests run in one process
    load_image(pydicom_file("CT_small.dcm"))
    logging.getLogger("pydicom").warning("outside a read")
    assert "outside a read" in caplog.text
