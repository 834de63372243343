"""Decoder exceptions → reasons from ragmed's vocabulary (shared by the in-process decoder and the isolated worker,
so neither imports the other)."""
from __future__ import annotations


def classify_decode_error(e: BaseException) -> str:
    """A reason from ragmed's vocabulary for a decoder exception. The exception's text is read, never repeated."""
    if isinstance(e, MemoryError):
        return "decoder ran out of memory"
    msg = str(e).lower()
    if "missing dependencies" in msg or "no pixel data decoders" in msg or "not supported" in msg \
            or "unable to decompress" in msg or "no decoder" in msg or isinstance(e, NotImplementedError):
        return "no installed decoder supports it"
    if "transfer syntax" in msg and ("missing" in msg or "no (0002,0010)" in msg or "has no" in msg):
        return "the file has no transfer syntax"
    if "less than expected" in msg or "insufficient" in msg or "truncat" in msg:
        return "pixel data shorter than the image pixel module declares"
    if "frame" in msg and ("index" in msg or "offset" in msg or "fragment" in msg or "number" in msg):
        return "frames cannot be located in the pixel data"
    if "missing required element" in msg or "missing required" in msg or "attributeerror" in msg \
            or isinstance(e, (AttributeError, KeyError)):
        return "image pixel module incomplete"
    return "corrupt or unsupported pixel data"
