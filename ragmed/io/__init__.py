"""Image input: ``load_image(path) -> MedicalImage``.

One reader per format (DICOM, PNG/JPEG) behind a small registry. Pixels leave this module as float32 in [0, 1]
(H×W for grayscale, H×W×3 for colour) after modality LUT, VOI LUT / windowing and MONOCHROME1 inversion. Only
de-identified metadata leaves this module: the allow-listed header attributes of :mod:`ragmed.io.deid`, all of them
kept by DICOM PS3.15's Basic Application Level Confidentiality Profile. :func:`deidentify` writes de-identified
copies of whole datasets. Compressed DICOM pixel data is decoded in an isolated worker process
(:mod:`ragmed.io._isolate`). Every failure is a :class:`ragmed.errors.ImageError` naming the file relative to the
corpus root.
"""
from __future__ import annotations

from ragmed.io.deid import RETAINED_KEYWORDS, deidentify
from ragmed.io.image import MedicalImage, content_hash
from ragmed.io.readers import READER_REGISTRY, READERS, load_image, load_series, register_reader

__all__ = ["MedicalImage", "content_hash", "load_image", "load_series", "READERS", "READER_REGISTRY", "register_reader",
           "deidentify", "RETAINED_KEYWORDS"]
