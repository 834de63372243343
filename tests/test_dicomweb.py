"""DICOMweb against a real Orthanc (Debian's orthanc + orthanc-dicomweb, started here on 127.0.0.1 and filled with
the shared DICOM samples over STOW-RS): QIDO-RS search, WADO-RS retrieve with de-identification, ``ragmed index build
--dicomweb`` with reports keyed by StudyInstanceUID, and study references in ``POST /v1/ask`` (JSON and FHIR)."""
from __future__ import annotations

import json
import sqlite3

import pytest

from tests.conftest import data_path
from tests.serve_utils import AUTH, API_KEY, CT_SMALL_STUDY, PACS_REPORTS, fill_orthanc, pacs_index, start_orthanc

pytest.importorskip("dicomweb_client")
httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    data = data_path()
    proc, url = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        files = fill_orthanc(url, data)
        yield url, files
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_qido_search_and_wado_retrieve_deidentified(orthanc, tmp_path):
    from ragmed.io.dicomweb import DicomWebSource, StudyRef, study_case_id

    url, _ = orthanc
    src = DicomWebSource(url)
    uids = set(src.study_uids())
    assert set(PACS_REPORTS) <= uids and len(uids) == 5  # 4 image studies + the RT plan
    assert src.study_uids({"ModalitiesInStudy": "CT"})  # a QIDO-RS filter reaches Orthanc
    img = src.load_reference(StudyRef(CT_SMALL_STUDY), tmp_path)
    assert img.modality == "CT" and img.pixels.shape == (128, 128)
    assert "CompressedSamples" not in json.dumps(img.meta, default=str)  # the sample's PatientName
    assert CT_SMALL_STUDY not in img.source and img.source.endswith(".dcm")
    # the 3-slice series: the middle instance is chosen first
    ct3 = "1.2.392.200103.20080913.113635.0.2009.6.22.21.43.10.22941.1"
    assert [c["number"] for c in src.choose_instances(StudyRef(ct3))] == [2, 1, 3]
    from ragmed.io.dicomweb import StudyNotFoundError

    with pytest.raises(StudyNotFoundError):
        src.load_reference(StudyRef("1.2.3.4.5"), tmp_path)
    assert study_case_id(CT_SMALL_STUDY).startswith("study-")


def test_index_build_from_the_pacs(orthanc, tmp_path_factory):
    from ragmed.index import open_index
    from ragmed.io.dicomweb import study_case_id

    idx, images, result = pacs_index(tmp_path_factory, orthanc[0])
    if result is not None:
        assert "1 stud(ies) skipped" in result.output and "no image instance" in result.output  # the RT plan
    store = open_index(idx)
    assert store.count("cases") == 4 and store.count("images") == 4
    rec = store.cases([study_case_id(CT_SMALL_STUDY)])[study_case_id(CT_SMALL_STUDY)]
    assert "pleural effusion" in rec.text.lower() and rec.images[0]["modality"] == "CT"
    raw = (store.version_dir / "meta.sqlite").read_bytes()
    for uid in PACS_REPORTS:
        assert uid.encode() not in raw  # no study UID in the index
    assert b"CompressedSamples" not in raw  # no patient name
    con = sqlite3.connect(store.version_dir / "meta.sqlite")
    assert con.execute("SELECT COUNT(*) FROM skipped").fetchone()[0] == 0


@pytest.fixture(scope="module")
def server(orthanc, tmp_path_factory):
    from ragmed.serve.process import start_server, stop_server

    idx, images, _ = pacs_index(tmp_path_factory, orthanc[0])
    proc, url = start_server("api", ["--index", str(idx), "--dicomweb", orthanc[0], "--corpus-root", str(images)],
                             env={"RAGMED_API_KEYS": API_KEY}, timeout=180)
    yield url
    stop_server(proc)


def test_ask_with_a_study_reference(server):
    from ragmed.io.dicomweb import study_case_id

    r = httpx.post(server + "/v1/ask", headers=AUTH, timeout=120,
                   data={"question": "Is there a pleural effusion?", "study": CT_SMALL_STUDY})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["image"]["modality"] == "CT" and a["image"]["study"]["case_id"] == study_case_id(CT_SMALL_STUDY)
    assert a["evidence"][0]["case_id"] == study_case_id(CT_SMALL_STUDY)  # the same study, indexed from the PACS
    assert CT_SMALL_STUDY not in r.text and "CompressedSamples" not in r.text
    t = httpx.get(server + a["evidence"][0]["thumbnail"], headers=AUTH)
    assert t.status_code == 200 and t.content[:4] == b"\x89PNG"
    r = httpx.post(server + "/v1/ask", headers=AUTH, data={"question": "q?", "study": "1.2.3.999"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "study_not_found"
    r = httpx.post(server + "/v1/ask", headers=AUTH, data={"question": "q?", "study": "../../etc/passwd"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "ImageError"


def test_ask_as_fhir_diagnostic_report(server):
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    r = httpx.post(server + "/v1/ask", headers=AUTH, timeout=120,
                   data={"question": "Is there a pleural effusion?", "study": CT_SMALL_STUDY, "format": "fhir"})
    assert r.status_code == 200, r.text
    rep = DiagnosticReport.model_validate(r.json())
    assert rep.status == "preliminary" and rep.conclusion
    assert rep.imagingStudy[0].identifier.value == f"urn:oid:{CT_SMALL_STUDY}"
    kinds = {c.get_resource_type() for c in rep.contained}
    assert kinds == {"DocumentReference", "Device"}
    devices = [c for c in rep.contained if c.get_resource_type() == "Device"]
    assert any("extractive" in d.deviceName[0].name for d in devices)
    from fhir.resources.R4B.guidanceresponse import GuidanceResponse

    r = httpx.post(server + "/v1/ask", headers=AUTH, timeout=120,
                   data={"question": "Is there a pleural effusion?", "study": CT_SMALL_STUDY, "format": "fhir-guidance"})
    g = GuidanceResponse.model_validate(r.json())
    assert g.status == "success" and g.requestIdentifier.value == r.headers["x-request-id"]
    assert g.contained[0].get_resource_type() == "DiagnosticReport" and g.note[0].text == rep.conclusion


def test_reports_from_a_structured_report_in_the_study(orthanc, tmp_path):
    """Without a report manifest, a study's report comes from its SR (Basic Text SR written here with pydicom and
    stored in Orthanc over STOW-RS beside the CT image of the same study)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from ragmed.io.dicomweb import DicomWebSource, StudyRef, study_case_id

    url, _ = orthanc
    ct = pydicom.dcmread(data_path("dicom", "pydicom-test-files", "CT_small.dcm"), stop_before_pixels=True)
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID, sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPClassUID, sr.file_meta.MediaStorageSOPInstanceUID
    sr.StudyInstanceUID, sr.SeriesInstanceUID, sr.Modality = ct.StudyInstanceUID, generate_uid(), "SR"
    sr.PatientID, sr.PatientName = ct.PatientID, ct.PatientName
    sr.ValueType, sr.InstanceNumber = "CONTAINER", 1

    def text(value):
        item = Dataset()
        item.RelationshipType, item.ValueType, item.TextValue = "CONTAINS", "TEXT", value
        return item

    sr.ContentSequence = [text("FINDINGS: Moderate right pleural effusion."), text("IMPRESSION: Effusion.")]
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    src = DicomWebSource(url)
    assert src.store_files([path]) == 1
    ref = StudyRef(CT_SMALL_STUDY)
    assert src.sr_text(ref) == "FINDINGS: Moderate right pleural effusion. IMPRESSION: Effusion."
    assert all(c["sop_class"] != sr.SOPClassUID for c in src.choose_instances(ref))  # never decoded as an image
    manifest, skipped = src.export_corpus(tmp_path / "export", query={"StudyInstanceUID": CT_SMALL_STUDY})
    rows = manifest.read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith(study_case_id(CT_SMALL_STUDY) + ",images/")
    assert rows[1].endswith("FINDINGS: Moderate right pleural effusion. IMPRESSION: Effusion.") and not skipped
