"""Question manifests (``ragmed ask`` in batch, ``Pipeline.ask_manifest``): CSV with a header, or JSONL."""
from __future__ import annotations

from pathlib import Path

from ragmed.errors import ConfigError


def read_questions(manifest: str | Path) -> list[dict[str, str]]:
    """Rows of a question manifest (CSV with a header, or JSONL): ``image``, ``question``, optional ``id``."""
    import csv
    import json

    p = Path(manifest)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read the question manifest: {e}", path=str(p)) from e
    if p.suffix in (".jsonl", ".ndjson"):
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise ConfigError(f"invalid JSONL: {e}", path=str(p)) from e
    else:
        rows = list(csv.DictReader(text.splitlines()))
    if rows and not any("question" in r or "image" in r for r in rows[:1]):
        raise ConfigError("a question manifest needs an `image` and/or `question` column", path=str(p))
    return [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in rows]
