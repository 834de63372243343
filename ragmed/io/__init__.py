"""Image input: ``load_image(path) -> MedicalImage``.

One reader per format (DICOM, PNG/JPEG) behind a small registry. Pixels leave this module as float32 in [0, 1]
(H×W for grayscale, H×W×3 for colour) after modality LUT, VOI LUT / windowing and MONOCHROME1 inversion. Only
de-identified metadata leaves this module: no header value that DICOM PS3.15's Basic Application Level
Confidentiality Profile removes.
"""
from __future__ import annotations

from ragmed.io.image import MedicalImage, content_hash
from ragmed.io.readers import READERS, load_image, load_series

__all__ = ["MedicalImage", "content_hash", "load_image", "load_series", "READERS"]
