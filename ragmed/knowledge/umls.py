"""Load a UMLS Metathesaurus release (RRF files) into a concept graph, streaming with bounded memory.

A licensed release is tens of GB; rows are filtered while they are read, and only the concepts and relations that
pass are kept: language (``LAT``), source vocabularies (``SAB``), semantic types (``MRSTY`` TUI or name),
suppression (``SUPPRESS``) and relation types (``REL`` / ``RELA``). The column layout of each file comes from
``MRFILES.RRF`` when the release has one, else from the documented layout of current releases.

Files read: ``MRSTY.RRF`` (semantic types; first, so the type filter applies to the rest), ``MRCONSO.RRF``
(names, synonyms, source codes), ``MRDEF.RRF`` (definitions), ``MRREL.RRF`` (relations). Each is optional except
MRCONSO. Rows are pipe-separated with a trailing pipe, UTF-8. A malformed row (wrong number of fields, bad CUI,
undecodable bytes) raises :class:`KnowledgeError` naming the file and line, or, with ``on_error="skip"``, is skipped
and counted in the report (``G.graph["report"]``).
"""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ragmed.errors import KnowledgeError
from ragmed.knowledge.schema import CUI_RE, concept, xref_vocab

log = logging.getLogger(__name__)

# Layouts of current releases (used when MRFILES.RRF is absent)
DEFAULT_COLUMNS = {
    "MRCONSO.RRF": "CUI,LAT,TS,LUI,STT,SUI,ISPREF,AUI,SAUI,SCUI,SDUI,SAB,TTY,CODE,STR,SRL,SUPPRESS,CVF",
    "MRSTY.RRF": "CUI,TUI,STN,STY,ATUI,CVF",
    "MRDEF.RRF": "CUI,AUI,ATUI,SATUI,SAB,DEF,SUPPRESS,CVF",
    "MRREL.RRF": "CUI1,AUI1,STYPE1,REL,CUI2,AUI2,STYPE2,RELA,RUI,SRUI,SAB,SL,RG,DIR,SUPPRESS,CVF",
}
DEFAULT_RELATIONS = frozenset({"PAR", "CHD", "RB", "RN", "RO"})
SUPPRESSED = frozenset({"O", "E", "Y"})  # obsolete, suppressible by editors, suppressible by source
_PREFERRED_TTY = ("PT", "PN", "MH", "PEP", "PF", "FN")
_HTML = re.compile(r"<[^>]+>")


class RRFTable:
    """One RRF file: its column names and a row iterator that validates every row."""

    def __init__(self, path: Path, columns: list[str], *, on_error: str = "raise"):
        self.path, self.columns, self.on_error = path, columns, on_error
        self.index = {c: i for i, c in enumerate(columns)}
        self.rows = 0
        self.skipped: list[tuple[int, str]] = []
        self.line = 0

    def _bad(self, line_no: int, reason: str) -> None:
        if self.on_error == "skip":
            self.skipped.append((line_no, reason))
            return
        raise KnowledgeError(f"line {line_no}: {reason}", path=str(self.path),
                             remedy="check the release files, or pass on_error='skip' (--skip-bad-rows) to skip "
                                    "and count malformed rows")

    def __iter__(self) -> Iterator[list[str]]:
        n = len(self.columns)
        with open(self.path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    self._bad(line_no, f"not UTF-8 ({e.reason} at byte {e.start})")
                    continue
                if not line:
                    continue
                fields = line.split("|")
                if len(fields) == n + 1 and fields[-1] == "":
                    fields.pop()
                elif len(fields) == n:
                    pass  # tolerate a missing trailing pipe
                else:
                    self._bad(line_no, f"expected {n} pipe-separated fields ({','.join(self.columns)}) and a "
                                       f"trailing pipe, found {len(fields) - (1 if fields[-1] == '' else 0)}")
                    continue
                self.rows += 1
                self.line = line_no
                yield fields


def read_mrfiles(meta: Path) -> dict[str, list[str]]:
    """Column layout per file from MRFILES.RRF (FIL|DES|FMT|CLS|RWS|BTS), falling back to DEFAULT_COLUMNS."""
    layout = {k: v.split(",") for k, v in DEFAULT_COLUMNS.items()}
    p = meta / "MRFILES.RRF"
    if p.exists():
        for fields in RRFTable(p, ["FIL", "DES", "FMT", "CLS", "RWS", "BTS"]):
            layout[fields[0]] = fields[2].split(",")
    return layout


def find_meta(path: str | Path) -> Path:
    p = Path(path)
    for cand in (p, p / "META"):
        if (cand / "MRCONSO.RRF").exists():
            return cand
    raise KnowledgeError("no MRCONSO.RRF here or in META/", path=str(p),
                         remedy="point --source umls:DIR at the release's META directory (or its parent)")


def _require(table: RRFTable, cols: Iterable[str]) -> None:
    missing = [c for c in cols if c not in table.index]
    if missing:
        raise KnowledgeError(f"column layout lacks {', '.join(missing)} (columns: {','.join(table.columns)})",
                             path=str(table.path), remedy="check MRFILES.RRF")


def load_umls(path: str | Path, *, languages: Iterable[str] | None = ("ENG",), sabs: Iterable[str] | None = None,
              semantic_types: Iterable[str] | None = None, suppress: Iterable[str] = SUPPRESSED,
              relations: Iterable[str] | None = DEFAULT_RELATIONS, definition_sabs: Iterable[str] | None = None,
              on_error: str = "raise", progress: Callable[[str, int], None] | None = None):
    """Build a ``networkx.MultiDiGraph`` of UMLS concepts (nodes are CUIs) from the RRF files under ``path``.

    ``languages`` / ``sabs``: keep MRCONSO rows of these languages / source vocabularies (None = all).
    ``semantic_types``: keep concepts having one of these types, given as TUIs (``T047``) or names (None = all).
    ``suppress``: SUPPRESS flags to drop (default O, E, Y; pass ``()`` to keep everything).
    ``relations``: MRREL ``REL`` or ``RELA`` values to keep (None = all; default PAR, CHD, RB, RN, RO).
    Returns the graph; ``G.graph["report"]`` counts rows read, kept and skipped per file.
    """
    import networkx as nx

    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    meta = find_meta(path)
    layout = read_mrfiles(meta)
    langs = set(languages) if languages else None
    sab_set = set(sabs) if sabs else None
    sty_set = set(semantic_types) if semantic_types else None
    sup = set(suppress or ())
    rel_set = set(relations) if relations else None
    report: dict[str, dict] = {}

    def table(name: str) -> RRFTable | None:
        p = meta / name
        if not p.exists():
            return None
        return RRFTable(p, layout.get(name) or DEFAULT_COLUMNS[name].split(","), on_error=on_error)

    def finish(t: RRFTable, kept: int) -> None:
        report[t.path.name] = {"rows": t.rows, "kept": kept, "skipped": len(t.skipped),
                               "skipped_lines": [f"{ln}: {r}" for ln, r in t.skipped[:20]]}
        if t.skipped:
            log.warning("%s: skipped %d malformed rows", t.path, len(t.skipped))

    def check_cui(t: RRFTable, fields: list[str], col: str, line: int) -> bool:
        c = fields[t.index[col]]
        if CUI_RE.match(c):
            return True
        t._bad(line, f"{col} {c!r} is not a CUI (C + 7 digits)")
        return False

    # 1. semantic types
    types: dict[str, list[str]] = {}
    t = table("MRSTY.RRF")
    if t is not None:
        _require(t, ("CUI", "TUI", "STY"))
        ic, it, isty = t.index["CUI"], t.index["TUI"], t.index["STY"]
        for fields in t:
            if not check_cui(t, fields, "CUI", t.line):
                continue
            types.setdefault(fields[ic], []).append(sys.intern(fields[isty]))  # ~130 distinct names
            if sty_set is not None and (fields[it] in sty_set or fields[isty] in sty_set):
                types[fields[ic]].append("\0keep")
        finish(t, len(types))
    elif sty_set is not None:
        raise KnowledgeError("a semantic-type filter needs MRSTY.RRF", path=str(meta / "MRSTY.RRF"))

    def type_ok(cui: str) -> bool:
        return sty_set is None or "\0keep" in types.get(cui, ())

    # 2. names
    t = table("MRCONSO.RRF")
    _require(t, ("CUI", "LAT", "TS", "STT", "ISPREF", "SAB", "TTY", "CODE", "STR", "SUPPRESS"))
    ix = t.index
    names: dict[str, dict] = {}
    kept = 0
    for fields in t:
        if not check_cui(t, fields, "CUI", t.line):
            continue
        cui = fields[ix["CUI"]]
        if langs is not None and fields[ix["LAT"]] not in langs:
            continue
        sab = fields[ix["SAB"]]
        if sab_set is not None and sab not in sab_set:
            continue
        if fields[ix["SUPPRESS"]] in sup:
            continue
        if not type_ok(cui):
            continue
        kept += 1
        rec = names.get(cui)
        if rec is None:
            rec = names[cui] = {"best": None, "rank": (-1,), "strings": {}, "xrefs": {}}
        s = fields[ix["STR"]]
        rank = (fields[ix["TS"]] == "P", fields[ix["STT"]] == "PF", fields[ix["ISPREF"]] == "Y",
                fields[ix["TTY"]] in _PREFERRED_TTY)
        if rank > rec["rank"]:
            rec["best"], rec["rank"] = s, rank
        rec["strings"].setdefault(s.casefold(), s)
        code = fields[ix["CODE"]]
        if code and code != "NOCODE":
            xs = rec["xrefs"].setdefault(xref_vocab(sab), [])
            if code not in xs:
                xs.append(code)
    finish(t, kept)
    if progress:
        progress("MRCONSO.RRF", t.rows)

    # 3. definitions
    defs: dict[str, tuple[int, str]] = {}
    t = table("MRDEF.RRF")
    if t is not None:
        _require(t, ("CUI", "SAB", "DEF"))
        order = list(definition_sabs or sabs or [])
        kept = 0
        for fields in t:
            if not check_cui(t, fields, "CUI", t.line):
                continue
            cui = fields[t.index["CUI"]]
            if cui not in names:
                continue
            if "SUPPRESS" in t.index and fields[t.index["SUPPRESS"]] in sup:
                continue
            sab = fields[t.index["SAB"]]
            rank = order.index(sab) if sab in order else len(order)
            if cui not in defs or rank < defs[cui][0]:
                defs[cui] = (rank, _HTML.sub("", fields[t.index["DEF"]]).strip())
                kept += 1
        finish(t, kept)

    G = nx.MultiDiGraph()
    for cui, rec in names.items():
        syns = [s for s in rec["strings"].values() if s != rec["best"]]
        tys = [x for x in types.get(cui, []) if x != "\0keep"]
        G.add_node(cui, **concept(cui, rec["best"], "UMLS", synonyms=syns, definition=defs.get(cui, (0, ""))[1],
                                  types=tys, xrefs={**rec["xrefs"], "UMLS": [cui]}))
    del names, defs

    # 4. relations
    t = table("MRREL.RRF")
    if t is not None:
        _require(t, ("CUI1", "REL", "CUI2", "RELA", "SAB"))
        ix = t.index
        seen: set[tuple[str, str, str]] = set()
        kept = 0
        for fields in t:
            if not (check_cui(t, fields, "CUI1", t.line) and check_cui(t, fields, "CUI2", t.line)):
                continue
            rel, rela = fields[ix["REL"]], fields[ix["RELA"]]
            if rel_set is not None and rel not in rel_set and rela not in rel_set:
                continue
            if sab_set is not None and fields[ix["SAB"]] not in sab_set:
                continue
            if "SUPPRESS" in ix and fields[ix["SUPPRESS"]] in sup:
                continue
            c1, c2 = fields[ix["CUI1"]], fields[ix["CUI2"]]
            if c1 == c2 or c1 not in G or c2 not in G:
                continue
            # REL is the relation of CUI2 to CUI1: PAR/RB = CUI2 is the parent/broader of CUI1
            if rel in ("PAR", "RB"):
                edge = (c1, c2, "is_a")
            elif rel in ("CHD", "RN"):
                edge = (c2, c1, "is_a")
            else:
                edge = (c2, c1, rela or rel)
            if edge in seen:
                continue
            seen.add(edge)
            G.add_edge(edge[0], edge[1], rel=edge[2], sab=fields[ix["SAB"]])
            kept += 1
        finish(t, kept)
    G.graph["report"] = report
    G.graph["sources"] = [{"name": "UMLS", "path": str(meta), "filters": {
        "languages": sorted(langs) if langs else None, "sabs": sorted(sab_set) if sab_set else None,
        "semantic_types": sorted(sty_set) if sty_set else None, "suppress": sorted(sup),
        "relations": sorted(rel_set) if rel_set else None}}]
    return G
