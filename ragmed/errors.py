"""Typed errors for every ragmed stage.

Every error names the file (by its path relative to the corpus, never by patient), the stage and the reason, and,
where there is one, the remedy. The CLI turns a :class:`RagmedError` into one line and exit code 1; the HTTP service
turns it into a 4xx with the same text.
"""
from __future__ import annotations


class RagmedError(Exception):
    """Base of every error ragmed raises on purpose."""

    stage = "ragmed"

    def __init__(self, reason: str, *, path: str | None = None, remedy: str | None = None):
        self.reason = reason
        self.path = str(path) if path is not None else None
        self.remedy = remedy
        super().__init__(str(self))

    def __str__(self) -> str:  # "scans/a.dcm: cannot decode ...; pip install ..."
        text = f"{self.path}: {self.reason}" if self.path else self.reason
        if self.remedy:
            text += f" ({self.remedy})"
        return text


class ConfigError(RagmedError):
    """A pipeline YAML or option is invalid."""

    stage = "config"


class ImageError(RagmedError):
    """An image file could not be turned into a MedicalImage."""

    stage = "io"


class UnsupportedFormatError(ImageError):
    """Not a DICOM / PNG / JPEG file, or a DICOM object that is not an image."""


class NoPixelDataError(ImageError):
    """A DICOM object without pixel data (SR, RT plan, DICOMDIR …)."""


class DecodeError(ImageError):
    """Pixel data present but undecodable (truncated, corrupt, missing codec)."""


class ImageTooLargeError(ImageError):
    """Rows × Columns × frames × samples exceeds the configured limit."""


class BurnedInAnnotationError(ImageError):
    """The image is flagged BurnedInAnnotation=YES and the user did not allow such images."""


class CorpusError(RagmedError):
    """A manifest cannot be read at all (a bad row is skipped and reported, not raised)."""

    stage = "corpus"


class ModelNotFoundError(RagmedError):
    """Weights named in a pipeline are missing; the remedy says how to obtain them."""

    stage = "encoders"


class EncoderError(RagmedError):
    stage = "encoders"


class IndexStoreError(RagmedError):
    """An index directory is missing, incomplete or corrupt."""

    stage = "index"


class EncoderMismatchError(IndexStoreError):
    """The query encoder differs from the encoder that built the index."""


class KnowledgeError(RagmedError):
    stage = "knowledge"


class DomainError(RagmedError):
    """The router refuses an image that fits no configured domain."""

    stage = "domains"


class GeneratorError(RagmedError):
    stage = "generate"


class EvalError(RagmedError):
    stage = "eval"
