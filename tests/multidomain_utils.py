"""A tiny real multi-domain corpus (images from the shared dev data, labelled by domain) and synthetic non-medical
images, for the router / hybrid retrieval / pipeline API tests."""
from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np

# domain -> (glob under shared data images/, report text per class folder)
SOURCES = {
    "pathology": ("lc25000-lung/lung_*/*.jpeg",
                  {"lung_aca": "Lung adenocarcinoma: malignant glandular epithelium on H&E histopathology.",
                   "lung_n": "Benign lung parenchyma with normal alveoli on H&E histopathology.",
                   "lung_scc": "Squamous cell carcinoma of the lung with keratin pearls on histopathology."}),
    "dermatology": ("ham10000-subset/images/*.jpg", None),
    "mri": ("brain-tumor-mri/Training/*/*.jpg",
            {"glioma": "Brain MRI: infiltrative glioma in the cerebral hemisphere.",
             "meningioma": "Brain MRI: extra-axial meningioma with dural tail.",
             "pituitary": "Brain MRI: pituitary adenoma in the sella turcica.",
             "notumor": "Brain MRI: no tumour, normal brain parenchyma."}),
    "microscopy": ("bccd/BCCD/JPEGImages/*.jpg", None),
}
DEFAULT_TEXT = {"dermatology": "Dermoscopy of a pigmented skin lesion; melanocytic nevus versus melanoma.",
                "microscopy": "Peripheral blood smear: red blood cells, a neutrophil white blood cell and platelets."}


def pick_images(data: Path, domain: str, n: int, *, offset: int = 0, seed: int = 0) -> list[Path]:
    pattern = SOURCES[domain][0]
    files = sorted((data / "images").glob(pattern))
    random.Random(seed).shuffle(files)
    return files[offset:offset + n]


def report_for(domain: str, path: Path) -> str:
    texts = SOURCES[domain][1]
    if texts is None:
        return DEFAULT_TEXT[domain]
    return texts.get(path.parent.name, DEFAULT_TEXT.get(domain, domain))


def write_corpus(data: Path, out: Path, n_per_domain: int = 10, *, label_column: str = "domain_label") -> Path:
    """A CSV manifest of ``n_per_domain`` real images per domain (absolute image paths; nothing copied)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for dom in SOURCES:
        for p in pick_images(data, dom, n_per_domain):
            rows.append({"id": f"{dom}-{p.stem}", "image": str(p), "report": report_for(dom, p), label_column: dom})
    manifest = out / "corpus.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


def multidomain_config(**overrides):
    """The shipped multi-domain pipeline, narrowed to the four domains the tiny corpus has (plus the tag-only ones)."""
    from ragmed.config import load_pipeline

    cfg = load_pipeline("multidomain")
    for k, v in overrides.items():
        section, _, field = k.partition("__")
        setattr(getattr(cfg, section), field, v) if field else setattr(cfg, section, v)
    return cfg


from ragmed.eval.nonmedical import make_nonmedical  # noqa: E402,F401  (one copy, shared with eval/)


try:  # a session-wide tiny index shared by the hybrid and API tests (import the fixture into the test module)
    import pytest

    @pytest.fixture(scope="session")
    def shared_md_index(tmp_path_factory, text_encoder):
        """A real multi-domain index (8 real images per domain) built with pipelines/multidomain.yaml."""
        from ragmed.corpus import read_corpus
        from ragmed.pipeline.build import build_from_config
        from tests.conftest import data_path

        tmp = tmp_path_factory.mktemp("md-shared")
        manifest = write_corpus(data_path(), tmp, 8)
        build_from_config(read_corpus(manifest), tmp / "index", multidomain_config(), progress=False,
                          text_encoder=text_encoder)
        return tmp / "index"
except ImportError:  # pragma: no cover - pytest is a dev dependency
    pass
