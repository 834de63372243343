"""ragmed.io.deid: the PS3.15 Basic Profile copy of a dataset, and the allow-list that load_image reads."""
from __future__ import annotations

import numpy as np
import pytest

from ragmed.errors import BurnedInAnnotationError
from ragmed.io import load_image
from ragmed.io.deid import RETAINED_KEYWORDS, deidentify, profile_acts_on, profile_table
from tests.test_io import PHI, PHI_STRINGS, PRIVATE_VALUE, pydicom_file, ramp, write_dicom

pydicom = pytest.importorskip("pydicom")
from pydicom.datadict import tag_for_keyword  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402


def _all_text(ds) -> str:
    parts = []

    def visit(d, elem):
        parts.append(f"{elem.tag} {elem.value!r}")

    ds.walk(visit)
    if getattr(ds, "file_meta", None) is not None:
        ds.file_meta.walk(visit)
    return "\n".join(parts)


def test_every_attribute_load_image_reads_is_kept_by_the_profile():
    table = profile_table()
    assert len(table["ALL_TAGS"]) > 500  # the real PS3.15 table, not a stub
    for kw in RETAINED_KEYWORDS:
        tag = tag_for_keyword(kw)
        assert tag is not None, kw
        assert not profile_acts_on(tag), f"{kw} is removed or replaced by the Basic Profile"
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
               "StudyDescription", "SOPInstanceUID", "StudyDate"):
        assert profile_acts_on(tag_for_keyword(kw)), kw
    assert profile_acts_on(0x00111001)  # private


def test_deidentify_removes_identifiers_everywhere_and_keeps_the_image(tmp_path):
    p = write_dicom(tmp_path / "phi.dcm", ramp(), BodyPartExamined="CHEST", StudyDate="20240105")
    ds = pydicom.dcmread(p)
    nested = Dataset()
    nested.PatientName = PHI["PatientName"]
    nested.PatientID = PHI["PatientID"]
    nested.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ds.ReferencedImageSequence = [nested]
    before = _all_text(ds)
    assert PHI["PatientName"] in before and PRIVATE_VALUE in before

    out = deidentify(ds)
    assert _all_text(ds) == before  # the input is not changed
    text = _all_text(out)
    for v in PHI_STRINGS:
        assert v not in text, v
    assert "20240105" not in text
    assert not any(elem.tag.is_private for elem in out.iterall())
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    # UIDs replaced, consistently (file meta and nested references follow the new SOP Instance UID)
    assert out.SOPInstanceUID != ds.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == out.SOPInstanceUID
    assert out.BodyPartExamined == "CHEST" and out.Modality == "OT"

    q = tmp_path / "clean.dcm"
    out.save_as(q, enforce_file_format=True)
    raw = q.read_bytes()
    for v in PHI_STRINGS:
        assert v.encode() not in raw, v
    assert np.array_equal(load_image(q).pixels, load_image(p).pixels)


def test_deidentify_real_file_and_uid_key():
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    assert str(ds.PatientName) == "CompressedSamples^CT1"
    a, b = deidentify(ds, uid_key="k1"), deidentify(ds, uid_key="k1")
    c = deidentify(ds, uid_key="k2")
    assert "CompressedSamples" not in _all_text(a)
    assert a.SOPInstanceUID == b.SOPInstanceUID != c.SOPInstanceUID != ds.SOPInstanceUID
    assert a.StudyInstanceUID != ds.StudyInstanceUID
    assert np.array_equal(a.pixel_array, ds.pixel_array)


def test_deidentify_refuses_burned_in_annotation(tmp_path):
    ds = pydicom.dcmread(write_dicom(tmp_path / "b.dcm", ramp(), BurnedInAnnotation="YES"))
    with pytest.raises(BurnedInAnnotationError):
        deidentify(ds)
    assert deidentify(ds, allow_burned_in=True).BurnedInAnnotation == "YES"


def test_deidentify_enhanced_mr_nested_functional_groups():
    """A real enhanced multi-frame MR (Siemens XA30): thousands of nested items, private groups everywhere."""
    from tests.conftest import data_path

    d = data_path("dicom", "series", "dcm_qa_xa30", "In", "5_anat-T1w_acq-tfl")
    ds = pydicom.dcmread(next(d.glob("*.dcm")))
    assert any(e.tag.is_private for e in ds.iterall())
    out = deidentify(ds)
    removed = {tuple(t) for t in profile_table()["X_TAGS"]}
    left = [e.tag for e in out.iterall() if (e.tag.group, e.tag.element) in removed and e.VR != "DA"]
    assert left == []  # (the library sets removed *dates* to 00010101 instead of deleting them)
    assert not any(e.tag.is_private for e in out.iterall())
    assert str(ds.PatientName) not in _all_text(out)
    assert len(out.PerFrameFunctionalGroupsSequence) == 96
    assert np.array_equal(out.pixel_array, ds.pixel_array)
