"""Save and load concept graphs in a safe format (JSON + numpy, no pickle) that loads fast.

A knowledge directory holds:

``manifest.json``       format version, graph id, sources with versions and licences, counts, relation names,
                        link types, the build command, sha256 of every file
``concepts.json.gz``    what linking needs of every node, column-wise: ``ids``, ``names`` and ``cuis`` as
                        newline-joined strings ("" = no CUI), ``source`` (index into ``sources``), ``types_flat`` /
                        ``types_off`` (indices into ``type_names``, node i's at ``types_off[i]:types_off[i+1]``);
                        ``aliases`` (the former ids of merged concepts → node index)
``details.sqlite``      the rest, read per concept when asked for (evidence, lookup): table
                        ``details(i INTEGER PRIMARY KEY, synonyms TEXT, definition TEXT, xrefs TEXT)``, JSON in the
                        text columns; opened read-only
``edges.npz``           ``src``, ``dst`` (int32 node indices) and ``rel`` (uint8 index into the manifest's
                        ``relations``), read with ``allow_pickle=False``
``lexicon.json.gz``     the linker's dictionary, precomputed: ``keys`` (normalised surface forms, newline-joined),
                        their postings flat in ``post`` with offsets ``off`` (``node_index * 4 + flags``; flag 1 =
                        preferred name, 2 = abbreviation), ``=ABBR`` keys are case-sensitive abbreviations;
                        ``maxlen`` per first token. (Format 1, lists of lists, is still read.)

Writes are atomic: the directory is written beside the target and renamed into place.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ragmed.errors import KnowledgeError
from ragmed.io.image import content_hash
from ragmed.knowledge.schema import DEFAULT_LINK_TYPES
from ragmed.knowledge.text import normalise

FORMAT_VERSION = 2  # 2: columns as newline-joined strings and flat integer arrays (reads 1 too)
FILES = ("concepts.json.gz", "details.sqlite", "edges.npz", "lexicon.json.gz")

# Single-token surface forms never linked: English function words and generic clinical qualifiers / heads that
# name no finding on their own. Generic, written for ragmed (not derived from any evaluation set).
GENERIC_WORDS = frozenset("""
a an and are as at be by for from has have in is it its of on or the to was were with no not
abnormal abnormality absent acute all alone any area bilateral change changes chronic clear complication
condition congenital decreased defect disease diseases disorder disorders early episode finding findings form
general generalized grade history increased injury large late left level lesion lesions local localized low
high mild moderate multiple negative new normal old other positive present primary problem process right
secondary severe sign signs single small stable stage status symptom symptoms syndrome type unchanged
unspecified unknown various
""".split())

# Common clinical abbreviations → expansion (hand-written; an abbreviation is linked only when written in
# capitals and only when its expansion is a surface form of a linkable concept in the graph).
ABBREVIATIONS = {
    "COPD": "chronic obstructive pulmonary disease", "CHF": "congestive heart failure", "PTX": "pneumothorax",
    "CAD": "coronary artery disease", "MI": "myocardial infarction", "PE": "pulmonary embolism",
    "DJD": "degenerative joint disease", "ARDS": "acute respiratory distress syndrome", "TB": "tuberculosis",
    "ILD": "interstitial lung disease", "CVA": "cerebrovascular accident", "DVT": "deep vein thrombosis",
    "AAA": "abdominal aortic aneurysm", "HTN": "hypertension", "DM": "diabetes mellitus",
    "GERD": "gastroesophageal reflux disease", "UTI": "urinary tract infection", "CKD": "chronic kidney disease",
    "AFIB": "atrial fibrillation", "AF": "atrial fibrillation", "SOB": "dyspnea", "RDS": "respiratory distress syndrome",
    "OSA": "obstructive sleep apnea", "SAH": "subarachnoid hemorrhage", "ICH": "intracerebral hemorrhage",
    "NSCLC": "non-small cell lung carcinoma", "SCLC": "small cell lung carcinoma", "HCC": "hepatocellular carcinoma",
    "SLE": "systemic lupus erythematosus",
    "ALS": "amyotrophic lateral sclerosis", "IBD": "inflammatory bowel disease", "BPH": "benign prostatic hyperplasia",
    "DISH": "diffuse idiopathic skeletal hyperostosis", "LVH": "left ventricular hypertrophy",
}
# Relational adjectives and their nouns (hand-written): a multi-word surface form also matches with one swapped for
# the other ("pulmonary nodule" / "lung nodule", "renal cyst" / "kidney cyst"). Single words are not varied.
ADJECTIVE_NOUN = {
    "pulmonary": "lung", "cardiac": "heart", "hepatic": "liver", "renal": "kidney", "cerebral": "brain",
    "splenic": "spleen", "pancreatic": "pancreas", "aortic": "aorta", "diaphragmatic": "diaphragm",
    "mediastinal": "mediastinum", "pleural": "pleura", "spinal": "spine", "vertebral": "vertebra",
    "costal": "rib", "tracheal": "trachea", "bronchial": "bronchus", "thoracic": "chest", "abdominal": "abdomen",
    "pelvic": "pelvis", "cranial": "skull", "femoral": "femur", "tibial": "tibia", "humeral": "humerus",
    "colonic": "colon", "gastric": "stomach", "esophageal": "esophagus", "oesophageal": "oesophagus",
    "vesical": "bladder", "uterine": "uterus", "ovarian": "ovary", "mammary": "breast", "thyroidal": "thyroid",
    "osseous": "bone", "articular": "joint", "hilar": "hilum", "pericardial": "pericardium", "vascular": "vessel",
    "intestinal": "bowel", "biliary": "bile duct", "cutaneous": "skin", "dermal": "skin", "ocular": "eye",
    "nasal": "nose", "oral": "mouth", "lingual": "tongue", "laryngeal": "larynx", "pharyngeal": "pharynx",
}
_VARIANTS: dict[str, str] = {**ADJECTIVE_NOUN, **{v: k for k, v in ADJECTIVE_NOUN.items() if " " not in v}}


def variant_keys(key: str) -> list[str]:
    """Lexicon keys of ``key`` with one relational adjective swapped for its noun or the other way round."""
    toks = key.split(" ")
    if len(toks) < 2 or len(toks) > 4:
        return []
    out = []
    for i, t in enumerate(toks):
        v = _VARIANTS.get(t)
        if v:
            out.append(" ".join([*toks[:i], *normalise(v).split(), *toks[i + 1:]]))
    return out


_ABBR_RE = re.compile(r"^[A-Z][A-Z0-9]{1,5}$")
MAX_SURFACE_TOKENS = 12


def surface_key(surface: str) -> tuple[str, int] | None:
    """(lexicon key, flags) of a surface form, or None when it must not be linked."""
    s = surface.strip()
    if _ABBR_RE.match(s):
        return "=" + s, 2
    key = normalise(s)
    toks = key.split()
    if not toks or len(toks) > MAX_SURFACE_TOKENS:
        return None
    if len(toks) == 1 and (len(key) < 3 or key in GENERIC_WORDS or key.isdigit()):
        return None
    if all(t in GENERIC_WORDS or t.isdigit() for t in toks):
        return None
    return key, 0


def build_lexicon(names: list[str], synonyms: list[list[str]], linkable: Iterable[int]) -> dict[str, Any]:
    lex: dict[str, list[int]] = {}
    variants: list[tuple[str, int]] = []
    added: set[str] = set()
    for i in linkable:
        for j, s in enumerate([names[i], *synonyms[i]]):
            k = surface_key(s)
            if k is None:
                continue
            key, flags = k
            code = i * 4 + flags + (1 if j == 0 else 0)
            post = lex.setdefault(key, [])
            if all(p // 4 != i for p in post):
                post.append(code)
            if not flags:
                variants.extend((v, i * 4) for v in variant_keys(key))
    for key, code in variants:  # only where no name or synonym already has this surface form
        if key not in lex or key in added:
            post = lex.setdefault(key, [])
            added.add(key)
            if all(p // 4 != code // 4 for p in post):
                post.append(code)
    for abbr, expansion in ABBREVIATIONS.items():
        post = lex.get(normalise(expansion))
        if post:
            dst = lex.setdefault("=" + abbr, [])
            for p in post:
                if all(q // 4 != p // 4 for q in dst):
                    dst.append((p // 4) * 4 + 2)
    maxlen: dict[str, int] = {}
    for key in lex:
        if key.startswith("="):
            continue
        toks = key.split(" ")
        if maxlen.get(toks[0], 0) < len(toks):
            maxlen[toks[0]] = len(toks)
    return {"keys": list(lex), "postings": list(lex.values()), "maxlen": maxlen}


def _dump_gz(obj: Any, path: Path) -> None:
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as f:
        f.write(data)


def _load_gz(path: Path) -> Any:
    with open(path, "rb") as f:
        data = gzip.decompress(f.read())
    try:
        import orjson

        return orjson.loads(data)
    except ImportError:  # pragma: no cover - orjson is in the kg extra
        return json.loads(data)


def save_graph(G, out: str | Path, *, name: str | None = None, link_types: Iterable[str] = DEFAULT_LINK_TYPES,
               command: str | None = None) -> Path:
    """Write a concept graph (``networkx`` graph in the common schema) to the directory ``out``, atomically."""
    from ragmed.version import __version__

    out = Path(out)
    t0 = time.perf_counter()
    ids = sorted(G.nodes)  # sorted, so that the same content always gives the same files and graph id
    index = {n: i for i, n in enumerate(ids)}
    sources: list[str] = []
    type_names: list[str] = []
    src_ix: dict[str, int] = {}
    ty_ix: dict[str, int] = {}
    cols: dict[str, list] = {k: [] for k in ("names", "source", "synonyms", "definitions", "types", "xrefs", "cuis")}
    for n in ids:
        d = G.nodes[n]
        s = d.get("source") or "?"
        if s not in src_ix:
            src_ix[s] = len(sources)
            sources.append(s)
        tys = []
        for t in d.get("types", []):
            if t not in ty_ix:
                ty_ix[t] = len(type_names)
                type_names.append(t)
            tys.append(ty_ix[t])
        cols["names"].append(d.get("name") or n)
        cols["source"].append(src_ix[s])
        cols["synonyms"].append(list(d.get("synonyms", [])))
        cols["definitions"].append(d.get("definition") or "")
        cols["types"].append(tys)
        cols["xrefs"].append(d.get("xrefs") or {})
        cols["cuis"].append(d.get("cui"))
    rel_names: list[str] = []
    rel_ix: dict[str, int] = {}
    src, dst, rel = [], [], []
    for u, v, d in sorted(G.edges(data=True), key=lambda e: (index[e[0]], index[e[1]], e[2].get("rel", ""))):
        r = d.get("rel", "related_to")
        if r not in rel_ix:
            if len(rel_names) >= 255:
                raise KnowledgeError("more than 255 relation names", remedy="filter relation types when building")
            rel_ix[r] = len(rel_names)
            rel_names.append(r)
        src.append(index[u])
        dst.append(index[v])
        rel.append(rel_ix[r])
    link_types = set(link_types)
    linkable = [i for i, n in enumerate(ids) if any(type_names[t] in link_types for t in cols["types"][i])]
    lexicon = build_lexicon(cols["names"], cols["synonyms"], linkable)

    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    aliases = {a: index[b] for a, b in sorted(G.graph.get("aliases", {}).items()) if b in index and a not in index}
    types_off = [0]
    for t in cols["types"]:
        types_off.append(types_off[-1] + len(t))
    _dump_gz({"ids": "\n".join(ids), "names": "\n".join(n.replace("\n", " ") for n in cols["names"]),
              "sources": sources, "source": cols["source"], "type_names": type_names,
              "types_flat": [t for ts in cols["types"] for t in ts], "types_off": types_off,
              "cuis": "\n".join(c or "" for c in cols["cuis"]), "aliases": aliases}, tmp / "concepts.json.gz")
    _write_details(tmp / "details.sqlite", cols)
    np.savez_compressed(tmp / "edges.npz", src=np.asarray(src, dtype=np.int32), dst=np.asarray(dst, dtype=np.int32),
                        rel=np.asarray(rel, dtype=np.uint8))
    off = [0]
    for p in lexicon["postings"]:
        off.append(off[-1] + len(p))
    _dump_gz({"keys": "\n".join(lexicon["keys"]), "post": [c for p in lexicon["postings"] for c in p], "off": off,
              "maxlen": lexicon["maxlen"]}, tmp / "lexicon.json.gz")
    counts_by_source: dict[str, int] = {}
    for s in cols["source"]:
        counts_by_source[sources[s]] = counts_by_source.get(sources[s], 0) + 1
    counts_by_rel = {r: int(c) for r, c in zip(rel_names, np.bincount(np.asarray(rel, dtype=np.int64),
                                                                       minlength=len(rel_names)))} if rel else {}
    name = name or out.name
    file_hashes = {f: content_hash(tmp / f) for f in FILES}
    digest = hashlib.sha256("".join(file_hashes[f] for f in FILES).encode()).hexdigest()
    manifest = {
        "format": "ragmed-knowledge", "format_version": FORMAT_VERSION, "name": name,
        "id": f"{name}@{digest[:12]}", "ragmed_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": command,
        "sources": G.graph.get("sources", []), "specs": G.graph.get("specs", []),
        "counts": {"nodes": len(ids), "edges": len(src), "linkable": len(linkable),
                   "lexicon_entries": len(lexicon["keys"]), "by_source": counts_by_source, "by_relation": counts_by_rel,
                   "with_cui": sum(1 for c in cols["cuis"] if c),
                   "synonyms": sum(len(x) for x in cols["synonyms"]), "aliases": len(aliases)},
        # nodes whose CUI only ragmed's hand-entered radiology CUIs state (no open cross-reference carries it)
        "cui_hand_entered_only": [n for n in G.graph.get("cui_hand_entered_only", []) if n in index],
        "xref_stats": G.graph.get("xref_stats", {}), "load_report": G.graph.get("report", {}),
        "relations": rel_names, "link_types": sorted(link_types),
        "files": {f: {"sha256": file_hashes[f], "bytes": (tmp / f).stat().st_size} for f in FILES},
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    old = out.with_name(out.name + f".old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)
    return out


def _write_details(path: Path, cols: dict) -> None:
    import sqlite3

    con = sqlite3.connect(path)
    try:
        con.execute("CREATE TABLE details (i INTEGER PRIMARY KEY, synonyms TEXT, definition TEXT, xrefs TEXT)")
        con.executemany("INSERT INTO details VALUES (?, ?, ?, ?)", (
            (i, json.dumps(syn, ensure_ascii=False), d, json.dumps(x, ensure_ascii=False))
            for i, (syn, d, x) in enumerate(zip(cols["synonyms"], cols["definitions"], cols["xrefs"]))))
        con.commit()
    finally:
        con.close()


def read_manifest(path: str | Path) -> dict:
    p = Path(path)
    mf = p / "manifest.json"
    if not mf.exists():
        raise KnowledgeError("not a knowledge graph directory (no manifest.json)", path=str(p),
                             remedy="build one with: ragmed kg build --source open --out knowledge/NAME")
    try:
        m = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise KnowledgeError(f"unreadable manifest.json: {e}", path=str(mf)) from e
    if m.get("format") != "ragmed-knowledge":
        raise KnowledgeError("manifest.json is not a ragmed knowledge graph manifest", path=str(mf))
    if m.get("format_version", 0) > FORMAT_VERSION:
        raise KnowledgeError(f"format version {m['format_version']} is newer than this ragmed reads "
                             f"({FORMAT_VERSION})", path=str(mf), remedy="upgrade ragmed")
    missing = [f for f in FILES if not (p / f).exists()]
    if missing:
        raise KnowledgeError(f"incomplete knowledge directory: missing {', '.join(missing)}", path=str(p),
                             remedy="rebuild it with ragmed kg build")
    return m


def _split(text: str) -> list[str]:
    return text.split("\n") if text else []


def _columns(c: dict) -> dict:
    """Concept columns in memory: ids, names, cuis (None for none), source, types_flat / types_off, aliases."""
    if isinstance(c["ids"], str):  # format 2
        return {"ids": _split(c["ids"]), "names": _split(c["names"]), "sources": c["sources"], "source": c["source"],
                "type_names": c["type_names"], "types_flat": c["types_flat"], "types_off": c["types_off"],
                "cuis": [x or None for x in _split(c["cuis"])] if c["ids"] else [], "aliases": c.get("aliases", {})}
    off = [0]  # format 1: list columns, types as lists
    for t in c["types"]:
        off.append(off[-1] + len(t))
    return {**c, "types_flat": [t for ts in c["types"] for t in ts], "types_off": off, "aliases": c.get("aliases", {})}


def _lexicon(x: dict) -> dict:
    """The linker's lexicon in memory: key → row, flat postings with offsets, maxlen per first token."""
    if isinstance(x["keys"], str):  # format 2
        keys = _split(x["keys"])
        post, off = x["post"], x["off"]
    else:
        keys, post, off = x["keys"], [], [0]
        for p in x["postings"]:
            post.extend(p)
            off.append(len(post))
    if len(off) != len(keys) + 1:
        raise ValueError("lexicon offsets do not match its keys")
    return {"rows": dict(zip(keys, range(len(keys)))), "post": post, "off": off, "maxlen": x["maxlen"]}


def read_columns(path: Path) -> tuple[dict, dict, dict]:
    """(concept columns, edge arrays, lexicon) of a knowledge directory."""
    try:
        cols = _load_gz(path / "concepts.json.gz")
        with np.load(path / "edges.npz", allow_pickle=False) as z:
            edges = {k: z[k] for k in ("src", "dst", "rel")}
        lex = _load_gz(path / "lexicon.json.gz")
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise KnowledgeError(f"corrupt knowledge directory: {e}", path=str(path),
                             remedy="rebuild it with ragmed kg build") from e
    try:
        cols, lex = _columns(cols), _lexicon(lex)
    except (KeyError, TypeError, ValueError) as e:
        raise KnowledgeError(f"corrupt knowledge directory: {e}", path=str(path),
                             remedy="rebuild it with ragmed kg build") from e
    n = len(cols["ids"])
    if any(len(cols[k]) != n for k in ("names", "source", "cuis")) or len(cols["types_off"]) != n + 1:
        raise KnowledgeError("corrupt concepts.json.gz: columns differ in length", path=str(path))
    if len(edges["src"]) and (edges["src"].max() >= n or edges["dst"].max() >= n):
        raise KnowledgeError("corrupt edges.npz: node index out of range", path=str(path))
    return cols, edges, lex
