"""Read a corpus manifest into :class:`Case` records.

CSV (header ``id,image,report`` at minimum) or JSONL, chosen by file extension. Optional columns: ``image`` may hold
several paths separated by ``|``; ``findings``, ``impression``, ``indication``, ``split``; every other column is kept
in ``Case.metadata`` under its own name (usable as a label). An empty ``image`` makes a text-only case. A row naming
a missing image is skipped and reported in ``Corpus.skipped`` with its reason; a corrupt image is found (and
reported the same way) when the index build decodes it.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ragmed.corpus.records import Case, Corpus, SkippedRow
from ragmed.corpus.sections import split_sections
from ragmed.errors import CorpusError

CORE = ("id", "image", "report", "findings", "impression", "indication", "split")


def read_corpus(path: str | Path, *, format: str | None = None, images: str | Path | None = None,
                language: str = "en", columns: dict[str, str] | None = None) -> Corpus:
    """Read a manifest (``csv``, ``jsonl``) or a VQA set (``vqa-rad``, ``slake``; needs ``images``).

    ``columns`` maps ragmed's column names to the manifest's, e.g. ``{"id": "uid", "image": ""}`` reads the id from
    ``uid`` and ignores any ``image`` column (an empty source name drops the column: a text-only corpus).
    """
    p = Path(path)
    if not p.exists():
        raise CorpusError("manifest not found", path=str(path))
    fmt = (format or _guess_format(p)).lower()
    if fmt in ("vqa-rad", "slake", "vqa"):
        from ragmed.corpus.vqa import read_vqa

        if images is None:
            raise CorpusError(f"--format {fmt} needs --images DIR (the folder holding the question images)", path=str(p))
        return read_vqa(p, Path(images), format=None if fmt == "vqa" else fmt, language=language)
    if fmt == "csv":
        rows = _read_csv(p, columns or {})
    elif fmt == "jsonl":
        rows = [(i, _rename(r, columns or {})) for i, r in _read_jsonl(p)]
        _check_image_column(sorted({k for _, r in rows for k in r}), columns or {}, p)
    else:
        raise CorpusError(f"unknown corpus format {fmt!r}; use csv, jsonl, vqa-rad or slake", path=str(p))
    root = Path(images) if images is not None else p.parent
    return build_corpus(rows, root=root, source=str(p), fmt=fmt)


def _guess_format(p: Path) -> str:
    suf = p.suffix.lower()
    if suf in (".jsonl", ".ndjson"):
        return "jsonl"
    if suf in (".csv", ".tsv"):
        return "csv"
    if suf == ".json":
        from ragmed.corpus.vqa import detect_vqa_format

        return detect_vqa_format(p)
    raise CorpusError(f"cannot tell the manifest format from the extension {suf!r}; pass --format", path=str(p))


def _rename(row: dict, columns: dict[str, str]) -> dict:
    if not columns:
        return row
    out = {k: v for k, v in row.items() if k not in columns}
    for ours, theirs in columns.items():
        if theirs:
            out[ours] = row.get(theirs.strip().lower(), "")
    return out


def _read_csv(p: Path, columns: dict[str, str] | None = None) -> list[tuple[int, dict]]:
    columns = {k.strip().lower(): v.strip().lower() for k, v in (columns or {}).items()}
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            sample = f.read(4096)
            f.seek(0)
            delim = "\t" if p.suffix.lower() == ".tsv" or ("\t" in sample.splitlines()[0] if sample else False) else ","
            reader = csv.DictReader(f, delimiter=delim)
            if reader.fieldnames is None:
                raise CorpusError("manifest is empty", path=str(p))
            fields = [h.strip().lower() for h in reader.fieldnames]
            for ours, theirs in columns.items():
                if theirs and theirs not in fields:
                    raise CorpusError(f"column {theirs!r} (given for {ours!r}) is not in the header {reader.fieldnames}",
                                      path=str(p))
            fields = list(_rename(dict.fromkeys(fields, ""), columns))
            if "id" not in fields or ("image" not in fields and "report" not in fields and "findings" not in fields):
                raise CorpusError(f"manifest header must have 'id' and 'image' and/or 'report'; found {reader.fieldnames}",
                                  path=str(p))
            _check_image_column(fields, columns, p)
            out = []
            line = reader.line_num
            for i, row in enumerate(reader, start=1):
                first, line = line + 1, reader.line_num
                row = _rename({(k or "").strip().lower(): (v or "") for k, v in row.items() if k is not None}, columns)
                swallowed = _swallowed_rows(row, len(reader.fieldnames), delim) if line > first else []
                if swallowed:
                    row = {"__error__": f"unbalanced quote: lines {first}–{line} were read as one row, "
                                        f"{len(swallowed)} further row(s) inside it ({', '.join(swallowed[:3])}"
                                        f"{' …' if len(swallowed) > 3 else ''}); fix the quoting and rebuild"}
                out.append((i, row))
            return out
    except UnicodeDecodeError as e:
        raise CorpusError(f"manifest is not UTF-8 text ({e.reason} at byte {e.start})", path=str(p)) from e
    except csv.Error as e:
        raise CorpusError(f"malformed CSV: {e}", path=str(p)) from e


# column names that hold image paths under another name: a manifest using one of them without `--column image=…`
# would otherwise become a text-only index without a word
IMAGE_LIKE = ("image_path", "image_paths", "imagepath", "image_file", "image_files", "img", "img_path",
              "path", "file", "filename", "file_name", "dicom", "dicom_path", "png", "jpg")


def _check_image_column(fields: list[str], columns: dict[str, str], p: Path) -> None:
    if "image" in fields or "images" in fields or "image" in columns:
        return
    like = [f for f in fields if f in IMAGE_LIKE]
    if like:
        raise CorpusError(f"no 'image' column, but {like[0]!r} looks like image paths; name it 'image', or pass "
                          f"--column image={like[0]} (or --column image= for a text-only index)", path=str(p))


def _swallowed_rows(row: dict, n_fields: int, delim: str) -> list[str]:
    """Lines inside one field that parse as whole rows of this manifest: an unbalanced quote joined them."""
    out = []
    for v in row.values():
        if "\n" not in (v or ""):
            continue
        for ln in v.split("\n")[1:]:
            cells = next(csv.reader([ln], delimiter=delim), [])
            if len(cells) == n_fields and cells[0].strip() and " " not in cells[0].strip():
                out.append(cells[0].strip())
    return out


def _read_jsonl(p: Path) -> list[tuple[int, dict]]:
    out = []
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                out.append((i, {"__error__": f"invalid JSON on line {i}: {e.msg}"}))
                continue
            if not isinstance(obj, dict):
                out.append((i, {"__error__": f"line {i} is not a JSON object"}))
                continue
            row = {}
            for k, v in obj.items():
                k = str(k).strip().lower()
                if k in ("image", "images") and isinstance(v, list):
                    row["image"] = "|".join(str(x) for x in v)
                elif isinstance(v, (dict, list)):
                    row[k] = json.dumps(v, ensure_ascii=False)
                else:
                    row[k] = "" if v is None else str(v)
            out.append((i, row))
    return out


def build_corpus(rows: list[tuple[int, dict]], *, root: Path, source: str, fmt: str) -> Corpus:
    cases: list[Case] = []
    skipped: list[SkippedRow] = []
    seen: set[str] = set()
    for i, row in rows:
        if "__error__" in row:
            skipped.append(SkippedRow(i, None, None, row["__error__"]))
            continue
        cid = (row.get("id") or "").strip()
        if not cid:
            skipped.append(SkippedRow(i, None, None, "empty id"))
            continue
        if cid in seen:
            skipped.append(SkippedRow(i, cid, None, f"duplicate id {cid!r}"))
            continue
        image_field = (row.get("image") or row.get("images") or "").strip()
        rels = [s.strip() for s in image_field.split("|") if s.strip()]
        paths, missing = [], []
        for rel in rels:
            ap = (root / rel) if not Path(rel).is_absolute() else Path(rel)
            (paths if ap.exists() else missing).append(str(ap) if ap.exists() else rel)
        if missing:
            skipped.append(SkippedRow(i, cid, missing[0], "image file not found" + (
                f" ({len(missing)} of {len(rels)} images)" if len(rels) > 1 else "")))
            continue
        report = (row.get("report") or "").strip()
        sections = {k: row[k].strip() for k in ("indication", "findings", "impression") if (row.get(k) or "").strip()}
        if report and not sections:
            sections = split_sections(report)
        if not report and sections:
            report = " ".join(f"{k.upper()}: {v}" for k, v in sections.items())
        if not paths and not report:
            skipped.append(SkippedRow(i, cid, None, "row has neither an image nor report text"))
            continue
        meta = {k: v for k, v in row.items() if k not in CORE and k != "images" and v is not None}
        split = (row.get("split") or "").strip() or None
        cases.append(Case(id=cid, images=paths, report=report, sections=sections, metadata=meta, split=split, row=i))
        seen.add(cid)
    return Corpus(source=source, root=root, cases=cases, skipped=skipped, format=fmt)
