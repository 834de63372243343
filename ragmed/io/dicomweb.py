"""Images from a PACS over DICOMweb (QIDO-RS search, WADO-RS retrieve, STOW-RS store), with ``dicomweb-client``.

    src = DicomWebSource("http://pacs:8042/dicom-web")
    uids = src.study_uids({"ModalitiesInStudy": "CR"})
    img = src.load_reference(StudyRef(uids[0]), workdir)          # one de-identified MedicalImage
    corpus_csv = src.export_corpus(workdir, reports={uid: text})  # for ``ragmed index build``

Retrieved instances are written to a local directory under opaque names (a hash of the SOP Instance UID) and then
decoded by :func:`ragmed.io.load_image`, so de-identification applies exactly as for files: nothing but the
allow-listed attributes leaves ``io``. Case ids of exported studies are ``study-<hash of the StudyInstanceUID>``; the
UID itself is written nowhere in the index (``study_case_id`` maps a UID to its case id).
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragmed.errors import ImageError, RagmedError

_UID_CHARS = set("0123456789.")
NON_IMAGE_SOP_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.481.", "1.2.840.10008.5.1.4.1.1.11.",
                          "1.2.840.10008.5.1.4.1.1.104.", "1.2.840.10008.5.1.4.1.1.66")


class PacsError(RagmedError):
    """The PACS could not be reached or answered with an error."""

    stage = "io"


class StudyNotFoundError(PacsError):
    """The referenced study, series or instance is not in the PACS (or holds no decodable image)."""


def check_uid(uid: str, what: str = "UID") -> str:
    uid = (uid or "").strip()
    if not uid or len(uid) > 64 or not set(uid) <= _UID_CHARS or uid.startswith(".") or ".." in uid:
        raise ImageError(f"{what}: not a DICOM UID (digits and dots, at most 64 characters)")
    return uid


def uid_hash(uid: str) -> str:
    return hashlib.sha256(uid.encode()).hexdigest()[:16]


def study_case_id(study_uid: str) -> str:
    """The case id that :meth:`DicomWebSource.export_corpus` gives a study."""
    return "study-" + uid_hash(study_uid)


@dataclass
class StudyRef:
    """A reference to a study, series or instance in a PACS."""

    study: str
    series: str | None = None
    instance: str | None = None

    @classmethod
    def parse(cls, study: str, series: str | None = None, instance: str | None = None) -> "StudyRef":
        """From UIDs, or from one ``study/series/instance`` path or a ``urn:oid:`` value."""
        study = (study or "").strip()
        if study.startswith("urn:oid:"):
            study = study[len("urn:oid:"):]
        if "/" in study and series is None:
            parts = [p for p in study.split("/") if p]
            study, series, instance = parts[0], (parts[1] if len(parts) > 1 else None), \
                (parts[2] if len(parts) > 2 else None)
        if instance and not series:
            raise ImageError("an instance reference needs its series")
        return cls(check_uid(study, "study"), check_uid(series, "series") if series else None,
                   check_uid(instance, "instance") if instance else None)

    def to_dict(self) -> dict[str, str]:
        """Hashed, never the UIDs themselves (answers and logs carry no identifiers)."""
        out = {"case_id": study_case_id(self.study), "study_hash": uid_hash(self.study)}
        if self.series:
            out["series_hash"] = uid_hash(self.series)
        if self.instance:
            out["instance_hash"] = uid_hash(self.instance)
        return out


def _value(item: dict, tag: str) -> Any:
    v = item.get(tag, {}).get("Value")
    return v[0] if v else None


class DicomWebSource:
    """A DICOMweb endpoint (the root that holds ``studies``: Orthanc's is ``http://host:8042/dicom-web``)."""

    def __init__(self, url: str, *, timeout: float = 30.0, headers: dict[str, str] | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = headers
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from dicomweb_client.api import DICOMwebClient

            self._client = DICOMwebClient(self.url, headers=self.headers, timeout=self.timeout)
        return self._client

    def _call(self, what: str, fn, *args, **kw):
        import requests

        try:
            return fn(*args, **kw)
        except requests.HTTPError as e:
            code = getattr(e.response, "status_code", None)
            if code == 404:
                raise StudyNotFoundError(f"{what}: not found in the PACS") from None
            raise PacsError(f"{what}: the PACS answered HTTP {code}") from None
        except requests.RequestException as e:
            raise PacsError(f"{what}: cannot reach the PACS ({type(e).__name__})",
                            remedy="check the DICOMweb URL and that the PACS is running") from None

    # --- QIDO-RS -------------------------------------------------------------------------------------------------
    def search_studies(self, query: dict[str, str] | None = None, limit: int | None = None,
                       page: int = 500) -> list[dict]:
        """Matching studies, paged with ``limit`` / ``offset``. Paging stops on a page that adds no new study: some
        servers (Orthanc's plugin with filters) ignore ``offset``, and dicomweb-client's own ``get_remaining`` would
        then loop for ever."""
        out: dict[str, dict] = {}
        offset = 0
        while limit is None or len(out) < limit:
            n = page if limit is None else min(page, limit - len(out))
            got = self._call("QIDO-RS study search", self.client.search_for_studies, search_filters=query or None,
                             limit=n, offset=offset or None)
            new = {u: s for s in got if (u := _value(s, "0020000D")) and u not in out}
            out.update(new)
            if len(got) < n or not new:
                break
            offset += len(got)
        return list(out.values())

    def study_uids(self, query: dict[str, str] | None = None, limit: int | None = None) -> list[str]:
        return [u for u in (_value(s, "0020000D") for s in self.search_studies(query, limit)) if u]

    def instances(self, ref: StudyRef, limit: int = 200) -> list[dict[str, Any]]:
        """The instances of a study (or series), as ``{series, instance, number, sop_class}``, image series first."""
        found = self._call("QIDO-RS instance search", self.client.search_for_instances,
                           study_instance_uid=ref.study, series_instance_uid=ref.series, limit=limit)
        out = []
        for it in found:
            sop = _value(it, "00080018")
            if ref.instance and sop != ref.instance:
                continue
            num = _value(it, "00200013")
            try:
                num = int(num) if num is not None else 0
            except (TypeError, ValueError):
                num = 0
            out.append({"series": _value(it, "0020000E"), "instance": sop, "number": num,
                        "sop_class": _value(it, "00080016") or ""})
        return out

    # --- WADO-RS -------------------------------------------------------------------------------------------------
    def download_instance(self, study: str, series: str, instance: str, dest: Path) -> Path:
        """Retrieve one instance (Part 10) into ``dest`` under an opaque name."""
        ds = self._call("WADO-RS retrieve", self.client.retrieve_instance, study, series, instance)
        dest.mkdir(parents=True, exist_ok=True)
        path = dest / f"{uid_hash(instance)}.dcm"
        ds.save_as(path, enforce_file_format=False)
        return path

    def choose_instances(self, ref: StudyRef, *, max_instances: int = 200) -> list[dict[str, Any]]:
        """Candidates in the order to try: the series with most image instances first, its middle instance first."""
        items = [i for i in self.instances(ref, limit=max_instances)
                 if not str(i["sop_class"]).startswith(NON_IMAGE_SOP_PREFIXES)]
        if not items:
            raise StudyNotFoundError("the referenced study holds no image instance")
        by_series: dict[str, list] = {}
        for i in items:
            by_series.setdefault(i["series"], []).append(i)
        order = []
        for series in sorted(by_series.values(), key=len, reverse=True):
            series.sort(key=lambda i: i["number"])
            mid = len(series) // 2
            order += [series[mid]] + series[:mid] + series[mid + 1:]
        return order

    def load_reference(self, ref: StudyRef, workdir: str | Path, *, max_instances: int = 200, tries: int = 5,
                       **load_kw):
        """Fetch the referenced image (an instance, else the middle of the study's or series' largest image series)
        over WADO-RS and decode it, de-identified, with :func:`ragmed.io.load_image`."""
        from ragmed.io.readers import load_image

        workdir = Path(workdir)
        last: Exception | None = None
        for cand in self.choose_instances(ref, max_instances=max_instances)[:tries]:
            path = self.download_instance(ref.study, cand["series"], cand["instance"], workdir)
            try:
                return load_image(path, root=workdir, **load_kw)
            except ImageError as e:
                last = e
        raise StudyNotFoundError(f"no decodable image in the referenced study ({type(last).__name__})")

    # --- STOW-RS -------------------------------------------------------------------------------------------------
    def store_files(self, paths: list[str | Path]) -> int:
        """Send DICOM files to the PACS (STOW-RS); returns how many were stored."""
        import pydicom

        n = 0
        for p in paths:
            ds = pydicom.dcmread(p)
            self._call("STOW-RS store", self.client.store_instances, [ds])
            n += 1
        return n

    # --- corpus export -------------------------------------------------------------------------------------------
    def export_corpus(self, dest: str | Path, *, query: dict[str, str] | None = None,
                      reports: dict[str, str] | None = None, limit: int | None = None,
                      max_instances: int = 200, progress=None) -> tuple[Path, list[dict[str, str]]]:
        """Fetch one representative image per matching study into ``dest/images`` and write ``dest/corpus.csv``
        (``id,image,report``) for ``ragmed index build``. Reports come from ``reports`` (keyed by
        StudyInstanceUID), else from the text of a structured report (SR) in the study. Returns the manifest's path
        and the studies skipped (``{"case_id", "reason"}``)."""
        dest = Path(dest)
        images = dest / "images"
        images.mkdir(parents=True, exist_ok=True)
        rows, skipped = [], []
        uids = self.study_uids(query, limit)
        for uid in uids:
            cid = study_case_id(uid)
            ref = StudyRef(uid)
            try:
                img_path = None
                for cand in self.choose_instances(ref, max_instances=max_instances)[:5]:
                    p = self.download_instance(uid, cand["series"], cand["instance"], images)
                    if _decodes(p, images):
                        img_path = p
                        break
                    p.unlink(missing_ok=True)
            except StudyNotFoundError as e:
                img_path, why = None, e.reason
            else:
                why = "no decodable image instance"
            report = (reports or {}).get(uid) or self.sr_text(ref, max_instances=max_instances)
            if img_path is None and not report:
                skipped.append({"case_id": cid, "reason": why})
                continue
            rows.append({"id": cid, "image": f"images/{img_path.name}" if img_path else "", "report": report or ""})
            if progress is not None:
                progress(len(rows), len(uids))
        manifest = dest / "corpus.csv"
        with manifest.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["id", "image", "report"])
            w.writeheader()
            w.writerows(rows)
        return manifest, skipped

    def sr_text(self, ref: StudyRef, *, max_instances: int = 200) -> str:
        """The text of the study's first structured report (its TextValue items, in document order), or ''."""
        import pydicom  # noqa: F401 - retrieve returns pydicom datasets

        srs = [i for i in self.instances(ref, limit=max_instances)
               if str(i["sop_class"]).startswith("1.2.840.10008.5.1.4.1.1.88.")]
        for i in srs[:1]:
            ds = self._call("WADO-RS retrieve", self.client.retrieve_instance, ref.study, i["series"], i["instance"])
            texts: list[str] = []
            _walk_sr(ds, texts)
            return " ".join(texts).strip()
        return ""


def _walk_sr(item, out: list[str]) -> None:
    for c in getattr(item, "ContentSequence", []) or []:
        if getattr(c, "ValueType", "") == "TEXT" and getattr(c, "TextValue", None):
            out.append(str(c.TextValue))
        _walk_sr(c, out)


def _decodes(path: Path, root: Path) -> bool:
    from ragmed.io.readers import load_image

    try:
        load_image(path, root=root)
        return True
    except ImageError:
        return False


def read_report_manifest(path: str | Path) -> dict[str, str]:
    """Reports keyed by StudyInstanceUID from a CSV (``StudyInstanceUID`` or ``study_uid`` column, and ``report``,
    or ``findings`` / ``impression``)."""
    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            r = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            uid = r.get("studyinstanceuid") or r.get("study_uid") or r.get("study")
            text = r.get("report") or " ".join(f"{k.upper()}: {r[k]}" for k in ("findings", "impression") if r.get(k))
            if uid and text:
                out[uid] = text
    return out


def export_from_pacs(url: str, dest: str | Path, query: list[str] | tuple[str, ...] = (),
                     reports: str | Path | None = None) -> tuple[Path, list[dict[str, str]]]:
    """``ragmed index build --dicomweb URL [--query K=V …] [--reports CSV]``: fetch the studies into ``dest`` and
    return (the corpus manifest to build from, the studies skipped)."""
    filters: dict[str, str] = {}
    for q in query or ():
        if "=" not in q:
            raise ImageError(f"--query {q!r} is not KEY=VALUE")
        k, v = q.split("=", 1)
        filters[k.strip()] = v.strip()
    rep = read_report_manifest(reports) if reports else None
    return DicomWebSource(url).export_corpus(dest, query=filters or None, reports=rep)
