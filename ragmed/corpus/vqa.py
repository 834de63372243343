"""VQA importers: VQA-RAD (``train.json`` style) and SLAKE. One case per image; its text is its Q–A pairs."""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ragmed.corpus.records import Case, Corpus, SkippedRow
from ragmed.errors import CorpusError

VQA_RAD_FIELDS = {"qid", "image_name", "question", "answer"}
SLAKE_FIELDS = {"img_name", "question", "answer"}


@dataclass
class QAItem:
    """One question about one image, as the VQA evaluators and importers use it."""

    qid: str
    image: str  # file name relative to the images directory
    question: str
    answer: str
    answer_type: str  # "closed" | "open" (trimmed, case-folded)
    question_type: str = ""
    organ: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def load_json(p: Path) -> list[dict]:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorpusError(f"cannot read VQA JSON: {e}", path=str(p)) from e
    if isinstance(data, dict):
        for key in ("data", "questions", "items"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise CorpusError("VQA JSON must be a list of objects", path=str(p))
    return data


def detect_vqa_format(p: Path, items: list[dict] | None = None) -> str:
    items = items if items is not None else load_json(p)
    keys = set(items[0]) if items else set()
    if VQA_RAD_FIELDS <= keys:
        return "vqa-rad"
    if SLAKE_FIELDS <= keys:
        return "slake"
    raise CorpusError(f"cannot tell the VQA format from fields {sorted(keys)}; pass --format vqa-rad|slake", path=str(p))


def read_qa(p: str | Path, *, format: str | None = None, language: str = "en") -> list[QAItem]:
    """Read VQA-RAD or SLAKE question–answer items (SLAKE: English only unless ``language`` is ``"all"``)."""
    p = Path(p)
    raw = load_json(p)
    fmt = format or detect_vqa_format(p, raw)
    out: list[QAItem] = []
    for i, r in enumerate(raw):
        if fmt == "slake":
            if language != "all" and str(r.get("q_lang", "en")).strip().lower() != language:
                continue
            image = str(r.get("img_name", ""))
            organ = str(r.get("location", "") or "")
            known = {"img_name", "question", "answer", "answer_type", "qid", "content_type"}
            qtype = str(r.get("content_type", "") or "")
        else:
            image = str(r.get("image_name", ""))
            organ = str(r.get("image_organ", "") or "")
            known = {"image_name", "question", "answer", "answer_type", "qid", "question_type", "image_organ"}
            qtype = str(r.get("question_type", "") or "")
        out.append(QAItem(
            qid=str(r.get("qid", i)), image=image, question=str(r.get("question", "")).strip(),
            answer=str(r.get("answer", "")).strip(), answer_type=str(r.get("answer_type", "")).strip().casefold(),
            question_type=qtype.strip(), organ=organ.strip(),
            extra={k: str(v) for k, v in r.items() if k not in known and not isinstance(v, (list, dict))},
        ))
    return out


def read_vqa(p: Path, images: Path, *, format: str | None = None, language: str = "en",
             exclude_images: set[str] | None = None) -> Corpus:
    items = read_qa(p, format=format, language=language)
    fmt = format or detect_vqa_format(p)
    by_image: OrderedDict[str, list[QAItem]] = OrderedDict()
    for it in items:
        by_image.setdefault(it.image, []).append(it)
    cases, skipped = [], []
    for n, (image, qas) in enumerate(by_image.items(), start=1):
        if exclude_images and image in exclude_images:
            continue
        cid = Path(image).with_suffix("").as_posix().replace("/", "_")
        path = images / image
        if not image or not path.exists():
            skipped.append(SkippedRow(n, cid, image, "image file not found"))
            continue
        text = " ".join(f"Q: {q.question} A: {q.answer}." for q in qas)
        meta: dict[str, str] = {}
        if fmt == "slake":
            for k in ("modality", "location"):
                v = next((q.extra.get(k) or (q.organ if k == "location" else "") for q in qas
                          if q.extra.get(k) or (k == "location" and q.organ)), "")
                if v:
                    meta[k] = v
        else:
            organ = next((q.organ for q in qas if q.organ), "")
            if organ:
                meta["image_organ"] = organ
        cases.append(Case(id=cid, images=[str(path)], report=text, sections={"findings": text}, metadata=meta, row=n))
    return Corpus(source=str(p), root=images, cases=cases, skipped=skipped, format=fmt)
