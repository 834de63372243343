"""De-identification after DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile.

Two parts, one table:

* :func:`deidentify` returns a de-identified *copy* of a pydicom ``Dataset`` (for writing DICOM files that leave
  ragmed, e.g. the demo corpus). The actions come from the profile's attribute table as maintained by the
  ``dicom-anonymizer`` package (``dicomfields_2026c``, PS3.15 2026c): X remove, Z empty, D dummy value, U replace UID,
  applied at every nesting level of sequences; private tags removed; UIDs replaced consistently within one process
  (a keyed hash with a per-process random key, or the ``uid_key`` you pass to keep references consistent across
  runs). Patient Identity Removed = YES and De-identification Method (Code Sequence: DCM 113100) are set.
* :data:`RETAINED_KEYWORDS` is the allow-list of header attributes that :func:`ragmed.io.load_image` reads out of a
  DICOM file at all. Every one of them is an attribute that the profile keeps unchanged (a test checks this against
  the table), so no value that the profile removes or replaces can leave ``ragmed.io`` through a ``MedicalImage``.
"""
from __future__ import annotations

import copy
import functools
import re
import secrets
from typing import TYPE_CHECKING

from ragmed.errors import BurnedInAnnotationError, ImageError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

PROFILE_TABLE = "dicomfields_2026c"
PROFILE_NAME = "DICOM PS3.15 Basic Application Level Confidentiality Profile"

#: Header attributes read by ``ragmed.io`` (everything else in a DICOM file is never looked at).
RETAINED_KEYWORDS: tuple[str, ...] = (
    "Modality", "BodyPartExamined", "ViewPosition", "ImageLaterality", "Laterality",
    "PixelSpacing", "ImagerPixelSpacing", "SOPClassUID",
    "PhotometricInterpretation", "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated",
    "BitsStored", "PixelRepresentation", "BurnedInAnnotation", "TransferSyntaxUID",
)

_CS = re.compile(r"[^A-Z0-9 _]")
_PROCESS_KEY = secrets.token_hex(16)


@functools.lru_cache(maxsize=1)
def profile_table() -> dict[str, list[tuple[int, ...]]]:
    """The profile's tag table by action class (``X_TAGS``, ``Z_TAGS``, ``D_TAGS``, ``U_TAGS`` …, ``ALL_TAGS``)."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    return dicom_anonymization_database_selector(PROFILE_TABLE)


def profile_acts_on(tag: int) -> bool:
    """True when the profile removes, empties or replaces the attribute ``tag`` (repeating groups included)."""
    group, elem = tag >> 16, tag & 0xFFFF
    if group % 2:
        return True  # private
    for t in profile_table()["ALL_TAGS"]:
        if len(t) == 2:
            if (group, elem) == t:
                return True
        elif group & t[2] == t[0] & t[2] and elem & t[3] == t[1] & t[3]:
            return True
    return False


def clean_code(value) -> str | None:
    """A retained Code String value as ragmed passes it on: upper case, [A-Z0-9 _] only, at most 16 characters."""
    if value is None:
        return None
    if not isinstance(value, (str, bytes)):
        try:
            value = value[0] if len(value) else ""
        except TypeError:
            value = str(value)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    text = _CS.sub("", str(value).strip().upper())[:16].strip()
    return text or None


def _uid_action(key: str):
    from pydicom.multival import MultiValue
    from pydicom.uid import generate_uid

    def new(old) -> str:
        return generate_uid(prefix="2.25.", entropy_srcs=[key, str(old)])

    def action(dataset, tag):
        elem = dataset.get(tag)
        if elem is None or elem.VR != "UI" or elem.value in (None, ""):
            return
        if isinstance(elem.value, MultiValue):
            elem.value = [new(v) for v in elem.value]
        else:
            elem.value = new(elem.value)

    return action


def _rules(key: str) -> dict:
    table = profile_table()
    uid = _uid_action(key)
    return {tuple(t): uid for t in [*table["U_TAGS"], *table["X_Z_U_STAR_TAGS"]]}


def deidentify(ds: "Dataset", *, allow_burned_in: bool = False, uid_key: str | None = None) -> "Dataset":
    """A de-identified copy of ``ds`` (``ds`` itself is not changed).

    Raises :class:`~ragmed.errors.BurnedInAnnotationError` when ``ds`` says BurnedInAnnotation=YES (header
    de-identification cannot clean pixels) unless ``allow_burned_in``.
    """
    from dicomanonymizer.simpledicomanonymizer import anonymize_dataset, initialize_actions
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from ragmed.io._quiet import quiet

    with quiet():
        if clean_code(ds.get("BurnedInAnnotation")) == "YES" and not allow_burned_in:
            raise BurnedInAnnotationError(
                "flagged BurnedInAnnotation=YES: header de-identification cannot remove text burned into pixels",
                remedy="pass allow_burned_in=True only after checking the pixels")
        out = copy.deepcopy(ds)
        rules = _rules(uid_key if uid_key is not None else _PROCESS_KEY)
        table = initialize_actions(PROFILE_TABLE)
        # Repeating-group rules (4-tuples: group/element masks) are applied by the library with Dataset.walk, which
        # already descends into sequences: the top level takes them, nested items only the single-tag rules.
        single = {k: v for k, v in table.items() if len(k) == 2}
        single_rules = {k: v for k, v in rules.items() if len(k) == 2}

        def clean(d: Dataset, top: bool) -> None:
            if top:
                base, extra = table, rules
            else:  # only the rules for tags this item holds (an enhanced MR has thousands of small items)
                present = {int(t) for t in d.keys()}
                base = {k: v for k, v in single.items() if (k[0] << 16 | k[1]) in present}
                extra = {k: v for k, v in single_rules.items() if (k[0] << 16 | k[1]) in present}
            try:
                anonymize_dataset(d, extra_anonymization_rules=extra, delete_private_tags=True,
                                  base_rules_gen=lambda: dict(base))
            except NotImplementedError as e:  # a VR the library cannot give a dummy value
                raise ImageError(f"cannot de-identify: {type(e).__name__}") from None
            for elem in list(d):
                if elem.VR == "SQ" and elem.value:
                    for item in elem.value:
                        clean(item, False)

        clean(out, True)
        out.PatientIdentityRemoved = "YES"
        out.DeidentificationMethod = f"{PROFILE_NAME} (ragmed, dicom-anonymizer {PROFILE_TABLE})"
        code = Dataset()
        code.CodeValue = "113100"
        code.CodingSchemeDesignator = "DCM"
        code.CodeMeaning = "Basic Application Confidentiality Profile"
        out.DeidentificationMethodCodeSequence = Sequence([code])
        meta = getattr(out, "file_meta", None)
        if meta is not None and "SOPInstanceUID" in out:
            meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    return out


def retained_header(ds: "Dataset") -> dict[str, object]:
    """Raw values of :data:`RETAINED_KEYWORDS` present in ``ds`` (the only header values ragmed.io reads)."""
    out: dict[str, object] = {}
    for kw in RETAINED_KEYWORDS:
        if kw == "TransferSyntaxUID":
            meta = getattr(ds, "file_meta", None)
            v = meta.get(kw) if meta is not None else None
        else:
            v = ds.get(kw)
        if v is not None and v != "":
            out[kw] = v
    return out


def uid_name(uid) -> str | None:
    """The dictionary name of a well-known UID (transfer syntax, SOP class), else None (never the UID itself)."""
    try:
        from pydicom.uid import UID

        u = UID(str(uid))
        name = u.name
        return name if name and name != str(u) else None
    except Exception:
        return None
