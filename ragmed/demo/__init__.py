"""The bundled demo: a small real DICOM corpus from files that registry packages ship (pydicom's test files and
``pydicom-data``'s NEMA samples), read offline, with short case texts that ragmed adds and marks as demo
annotations. One extra DICOM is written with *synthetic* patient identifiers to show that they are stripped.

``run_demo(out)`` builds the corpus and index and answers one question about a chest radiograph.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from ragmed.errors import CorpusError

CASES = Path(__file__).with_name("cases.csv")
SYNTHETIC_PHI = {
    "PatientName": "SYNTHETIC^DEMO^PATIENT",
    "PatientID": "SYN-PID-0042",
    "PatientBirthDate": "19420317",
    "AccessionNumber": "SYN-ACC-7781",
    "InstitutionName": "Synthetic Demo Hospital",
    "ReferringPhysicianName": "SYNTHETIC^REFERRER",
}
QUERY_FILE = "RG1_UNCR.dcm"  # the uncompressed twin of the indexed CR chest: a new file of the same study
QUERY_QUESTION = "Is there a pleural effusion?"


def testdata(name: str) -> Path:
    from pydicom.data import get_testdata_file

    p = get_testdata_file(name, download=False)
    if p is None:
        raise CorpusError(f"demo image {name} not found in the installed pydicom / pydicom-data packages",
                          remedy="pip install pydicom-data")
    return Path(p)


@dataclass
class DemoCorpus:
    manifest: Path
    phi_file: Path
    query: Path


def write_demo_corpus(root: str | Path) -> DemoCorpus:
    """Write ``manifest.csv`` (absolute paths to the packaged images) and the synthetic-PHI DICOM under ``root``."""
    import pydicom

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(CASES, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows.append({"id": r["id"], "image": str(testdata(r["testdata_file"])), "report": r["report"],
                         "source_note": r["modality_note"]})
    ds = pydicom.dcmread(testdata("CT_small.dcm"))
    for k, v in SYNTHETIC_PHI.items():
        setattr(ds, k, v)
    phi = root / "synthetic_phi_ct.dcm"
    ds.save_as(phi)
    rows.append({"id": "demo-ct-synthetic-phi", "image": phi.name,
                 "report": "[demo annotation, illustrative] FINDINGS: Axial CT slice carrying synthetic patient "
                           "identifiers in its header, written by the demo to show de-identification. "
                           "IMPRESSION: Axial CT, demonstration case.",
                 "source_note": "CT (pydicom test file, synthetic identifiers added by ragmed)"})
    manifest = root / "manifest.csv"
    tmp = manifest.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "image", "report", "source_note"])
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, manifest)
    return DemoCorpus(manifest=manifest, phi_file=phi, query=testdata(QUERY_FILE))


def scan_for_phi(directory: str | Path, values: dict[str, str] = SYNTHETIC_PHI) -> list[tuple[str, str]]:
    """Every (file, identifier) pair where an identifier value (or its name parts) occurs in a file's bytes."""
    needles = set()
    for v in values.values():
        needles.add(v.encode())
        needles.update(p.encode() for p in v.split("^") if len(p) >= 6)
    hits = []
    root = Path(directory)
    for p in [root] if root.is_file() else root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            for n in needles:
                if n in data:
                    hits.append((str(p), n.decode()))
    return hits
