"""Small real corpora written by tests: PNGs with structure, DICOMs written with pydicom."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def write_png(path: Path, seed: int, size: int = 48, kind: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = {0: xx, 1: yy, 2: np.sqrt((xx - 0.5) ** 2 + (yy - 0.5) ** 2)}[kind % 3]
    img = np.clip(base + 0.05 * rng.standard_normal((size, size)), 0, 1)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


def write_dicom(path: Path, *, seed: int = 0, phi: dict | None = None, size: int = 32, modality: str = "CT",
                burned_in: str | None = None, phantom: bool = False) -> Path:
    """A small CT-like DICOM. Pixels: uniform noise by default; ``phantom=True``: a smooth elliptical body with a
    seed-placed lesion and mild noise (an image that passes ragmed's out-of-distribution checks)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.BodyPartExamined = "CHEST"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    rng = np.random.default_rng(seed)
    if phantom:
        yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
        body = ((xx / 0.42) ** 2 + (yy / 0.34) ** 2 < 1).astype(float)
        cy, cx = rng.uniform(-0.2, 0.2, 2)
        lesion = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.004)
        pix = 1024 + body * 900 + lesion * 600 + rng.normal(0, 15, (size, size))
        ds.PixelData = np.clip(pix, 0, 4000).astype(np.uint16).tobytes()
    else:
        ds.PixelData = (rng.integers(0, 4000, (size, size))).astype(np.uint16).tobytes()
    for k, v in (phi or {}).items():
        setattr(ds, k, v)
    if burned_in:
        ds.BurnedInAnnotation = burned_in
    ds.save_as(path, enforce_file_format=True)
    return path


def write_manifest(path: Path, rows: list[dict]) -> Path:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


REPORTS = [
    "FINDINGS: The lungs are clear. No pleural effusion or pneumothorax. IMPRESSION: Normal chest.",
    "FINDINGS: Right lower lobe consolidation. Small right pleural effusion. IMPRESSION: Pneumonia.",
    "FINDINGS: Cardiomegaly with pulmonary vascular congestion. IMPRESSION: Congestive heart failure.",
    "FINDINGS: Left apical pneumothorax, about 2 cm. IMPRESSION: Left pneumothorax.",
]


def png_corpus(root: Path, n: int, start: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(start, start + n):
        write_png(root / f"img{i}.png", seed=i, kind=i)
        rows.append({"id": f"case{i}", "image": f"img{i}.png", "report": REPORTS[i % len(REPORTS)],
                     "label": ["normal", "pneumonia", "chf", "ptx"][i % 4]})
    return write_manifest(root / f"manifest-{start}-{n}.csv", rows)


def vqa_rad_split_pipeline(tmp_path: Path, n_images: int, name: str, k: int, generator: str):
    """A real index of the first ``n_images`` training images of the committed VQA-RAD split (their question–answer
    pairs as cases; MiniLM + the shipped tower, no fitting, no knowledge graph) and the Pipeline over it, with
    ``generator`` (a YAML flow mapping) answering. Returns (pipeline, images dir, train.json rows, the images)."""
    import json

    from ragmed.config import load_pipeline
    from ragmed.corpus import read_corpus
    from ragmed.pipeline import Pipeline
    from ragmed.pipeline.build import build_from_config
    from tests.conftest import REPO, data_path

    images = data_path("vqa-rad", "images")
    rows = json.loads(data_path("vqa-rad", "train.json").read_text())
    split = json.loads((REPO / "eval" / "splits" / "vqa_rad_vlm_seed0.json").read_text())
    train = sorted(split["train_images"])[:n_images]
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps([r for r in rows if r["image_name"] in set(train)]))
    pipe = tmp_path / f"{name}.yaml"
    pipe.write_text(f"name: {name}\nencoders:\n  text: {{name: minilm}}\n  image: {{name: ragmed-default}}\n"
                    f"index: {{fit_image_encoder: false}}\nselect: {{name: fixed, params: {{k: {k}}}}}\n"
                    f"generator: {generator}\nknowledge: {{path: null}}\n")
    build_from_config(read_corpus(corpus, format="vqa-rad", images=images), tmp_path / "idx", load_pipeline(str(pipe)),
                      progress=False)
    return Pipeline.for_index(tmp_path / "idx", pipe), images, rows, train
