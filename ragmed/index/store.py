"""Reading an index directory: manifest, SQLite metadata and per-domain FAISS indexes.

On disk (see ``indexes/README.md``)::

    DIR/current -> v-<timestamp>        atomically swapped symlink to the live version
    DIR/v-<timestamp>/manifest.json     what built it: encoders (id, dim, space), factory, pipeline, versions, checksum
    DIR/v-<timestamp>/meta.sqlite       cases, images (one row per image vector), skipped rows
    DIR/v-<timestamp>/domains/<domain>/{image,text}.faiss   IndexIDMap2 over the chosen factory, inner product
    DIR/v-<timestamp>/vectors/...        the raw vectors in parts (for add / rebuild without re-encoding)
    DIR/.staging/                        an interrupted build, resumed by the next build with the same inputs
"""
from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ragmed.errors import EncoderMismatchError, IndexStoreError
from ragmed.index.base import ManifestProperties
from ragmed.index.records import CaseRecord, Hit
from ragmed.registry import Registry

SCHEMA = 1


def resolve_version_dir(path: str | Path) -> Path:
    p = Path(path)
    if (p / "current").exists():
        return (p / "current").resolve()
    if (p / "manifest.json").exists():
        return p
    if not p.exists():
        raise IndexStoreError("index directory not found", path=str(p),
                              remedy="build one with `ragmed index build --corpus MANIFEST --out DIR`")
    raise IndexStoreError("not a ragmed index (no 'current' version and no manifest.json)", path=str(p),
                          remedy="rebuild it with `ragmed index build`")


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The one reader of an index's ``manifest.json`` (``path``: the index directory or a version directory)."""
    vd = resolve_version_dir(path)
    try:
        return json.loads((vd / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise IndexStoreError(f"cannot read manifest.json: {e}", path=str(vd)) from e


class IndexStore(ManifestProperties):
    """A loaded index: thread-safe for searching (FAISS search is re-entrant; SQLite per thread)."""

    def __init__(self, path: str | Path, *, use_gpu: bool = True):
        self.path = Path(path)
        self.version_dir = resolve_version_dir(path)
        self.manifest = read_manifest(self.version_dir)
        if "calibration" not in self.manifest:  # the evidence floors live in the calibration artefact
            from ragmed.index.calibrate import Calibrator

            cal = Calibrator.load(self.version_dir)
            if cal is not None:
                self.manifest["calibration"] = cal.floors()
        if self.manifest.get("schema", 0) > SCHEMA:
            raise IndexStoreError(f"index schema {self.manifest.get('schema')} is newer than this ragmed supports",
                                  path=str(self.path), remedy="upgrade ragmed")
        self._use_gpu = use_gpu
        self._faiss: dict[tuple[str, str], Any] = {}
        self._idmaps: dict[tuple[str, str], tuple] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._db_path = self.version_dir / "meta.sqlite"
        if not self._db_path.exists():
            raise IndexStoreError("meta.sqlite missing", path=str(self.version_dir))

    # --- metadata -------------------------------------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(f"file:{self._db_path}?mode=ro", uri=True, check_same_thread=False)
            con.row_factory = sqlite3.Row
            self._local.con = con
        return con

    def count(self, kind: str = "cases") -> int:
        table = {"cases": "cases", "images": "images"}[kind]
        return int(self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def cases(self, case_ids: list[str]) -> dict[str, CaseRecord]:
        if not case_ids:
            return {}
        out: dict[str, CaseRecord] = {}
        q = ",".join("?" * len(case_ids))
        for r in self.db.execute(f"SELECT * FROM cases WHERE case_id IN ({q})", case_ids):
            out[r["case_id"]] = CaseRecord(r["case_id"], r["text"], json.loads(r["sections"]), json.loads(r["metadata"]),
                                           r["split"], r["domain"])
        for r in self.db.execute(f"SELECT * FROM images WHERE case_id IN ({q}) ORDER BY vec_id", case_ids):
            if r["case_id"] in out:
                out[r["case_id"]].images.append({k: r[k] for k in ("source", "content_hash", "modality", "body_part",
                                                                      "view")})
        return out

    def iter_cases(self, batch: int = 1000):
        cur = self.db.execute("SELECT case_id FROM cases ORDER BY rowid")
        while rows := cur.fetchmany(batch):
            yield from self.cases([r[0] for r in rows]).values()

    def case_ids_with_hash(self, content_hash: str) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT case_id FROM images WHERE content_hash=?", (content_hash,))}

    def texts(self, domain: str | None = None) -> list[tuple[str, str, str]]:
        """(case id, report text, domain) of every case with text, in index order (one domain's, or all)."""
        if domain is None:
            q, args = "SELECT case_id, text, domain FROM cases WHERE text != '' ORDER BY rowid", ()
        else:
            q, args = "SELECT case_id, text, domain FROM cases WHERE domain=? AND text != '' ORDER BY rowid", (domain,)
        return [(r[0], r[1], r[2]) for r in self.db.execute(q, args)]

    def text_vector_cases(self, domain: str) -> dict[int, str]:
        """Text vector id → case id for one domain's text sub-index."""
        vec_ids, case_ids, _, _ = self._id_map(domain, "text")
        return dict(zip(vec_ids.tolist(), case_ids))

    def calibrator(self):
        """The index's :class:`~ragmed.index.calibrate.Calibrator` (None for an index built without one)."""
        from ragmed.index.calibrate import Calibrator

        return Calibrator.load(self.version_dir)

    def bm25(self):
        """The index's BM25 channel (None for an index built without one)."""
        from ragmed.index.bm25 import BM25Channel

        return BM25Channel.load(self.version_dir)

    def image_rows(self, domain: str | None = None) -> list[dict[str, Any]]:
        """One dict per image vector (vec_id, case_id, source, content_hash, modality, body_part, view, domain),
        in vector-id order (one domain's, or all)."""
        if domain is None:
            rows = self.db.execute("SELECT * FROM images ORDER BY vec_id")
        else:
            rows = self.db.execute("SELECT * FROM images WHERE domain=? ORDER BY vec_id", (domain,))
        return [dict(r) for r in rows]

    def skipped(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT row, case_id, path, reason FROM skipped ORDER BY row")]

    # --- vectors --------------------------------------------------------------------------------------------
    def faiss_index(self, domain: str, kind: str):
        key = (domain, kind)
        if key not in self._faiss:
            with self._lock:
                if key not in self._faiss:
                    from ragmed.index.faiss_utils import to_gpu_if_available
                    from ragmed.index.ondisk import read_domain_index  # in memory, on-disk lists or shards

                    params = self.manifest.get("search_params", {})
                    idx = read_domain_index(self.version_dir / "domains" / domain, kind,
                                            ef_search=params.get("ef_search", 128), nprobe=params.get("nprobe", 32))
                    if idx is None:
                        self._faiss[key] = None
                    else:
                        self._faiss[key] = to_gpu_if_available(idx) if self._use_gpu else idx
        return self._faiss[key]

    def check_encoder(self, role: str, encoder) -> None:
        """Refuse a query encoder that differs from the one that built the index, naming both."""
        check_encoder_record(self.encoders, role, encoder, self.path)

    def search(self, kind: str, queries: np.ndarray, k: int, *, domains: list[str] | None = None,
               channel: str | None = None) -> list[list[Hit]]:
        """Search ``kind`` ("image" or "text") vectors of the given domains; per query a list of :class:`Hit`
        best first (across domains merged by score). Image hits are collapsed to their case (best image wins)."""
        from ragmed.index.faiss_utils import check_queries

        domains = domains or self.domains
        dim = int(self.encoders.get(kind if kind == "image" else "text", {}).get("dim", 0))
        if kind == "image" and "image" not in self.encoders:
            return [[] for _ in range(len(np.atleast_2d(queries)))]
        q = check_queries(queries, dim)
        results: list[list[Hit]] = [[] for _ in range(q.shape[0])]
        searched = 0
        for d in domains:
            idx = self.faiss_index(d, kind)
            if idx is None or idx.ntotal == 0:
                continue
            searched += 1
            kk = min(idx.ntotal, k * (3 if kind == "image" else 1))
            scores, ids = idx.search(q, kk)
            for qi in range(q.shape[0]):
                results[qi].extend(self._hits(d, kind, scores[qi], ids[qi], channel or kind))
        if kind == "text" and searched <= 1:  # one vector per case, already sorted by FAISS: nothing to merge
            return [hits[:k] for hits in results]
        out = []
        for hits in results:
            best: dict[str, Hit] = {}
            for h in sorted(hits, key=lambda h: -h.score):
                if h.case_id not in best:
                    best[h.case_id] = h
            out.append(list(best.values())[:k])
        return out

    def _id_map(self, domain: str, kind: str) -> tuple[np.ndarray, list[str], list[str] | None, int | None]:
        """Vector id → case id (and image source), loaded once per sub-index: searching needs no SQLite. The last
        item is the first vector id when the ids are contiguous (the usual case), so a hit is one subtraction."""
        key = (domain, kind)
        m = self._idmaps.get(key)
        if m is None:
            with self._lock:
                m = self._idmaps.get(key)
                if m is None:
                    if kind == "image":
                        rows = self.db.execute("SELECT vec_id, case_id, source FROM images WHERE domain=? "
                                               "ORDER BY vec_id", (domain,)).fetchall()
                        m = (np.fromiter((r[0] for r in rows), np.int64, len(rows)), [r[1] for r in rows],
                             [r[2] for r in rows])
                    else:
                        rows = self.db.execute("SELECT rowid, case_id FROM cases WHERE domain=? ORDER BY rowid",
                                               (domain,)).fetchall()
                        m = (np.fromiter((r[0] for r in rows), np.int64, len(rows)), [r[1] for r in rows], None)
                    v = m[0]
                    contiguous = len(v) > 0 and int(v[-1]) - int(v[0]) == len(v) - 1
                    m = (*m, int(v[0]) if contiguous else None)
                    self._idmaps[key] = m
        return m

    def _hits(self, domain: str, kind: str, scores, ids, channel: str) -> list[Hit]:
        vec_ids, case_ids, sources, first = self._id_map(domain, kind)
        if not len(vec_ids):
            return []
        if first is not None:  # contiguous ids: index directly (FAISS pads missing results with -1)
            n = len(case_ids)
            out = []
            for s, i in zip(scores.tolist(), ids.tolist()):
                j = i - first
                if i >= 0 and 0 <= j < n:
                    out.append(Hit(case_ids[j], s, channel, domain, sources[j] if sources is not None else None, i))
            return out
        pos = np.searchsorted(vec_ids, ids)
        pos[pos >= len(vec_ids)] = 0
        ok = (ids >= 0) & (vec_ids[pos] == ids)
        return [Hit(case_ids[j], float(s), channel, domain, sources[j] if sources is not None else None, int(i))
                for s, i, j, good in zip(scores.tolist(), ids.tolist(), pos.tolist(), ok.tolist()) if good]

    def vectors(self, domain: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """All stored (ids, vectors) of one domain and kind, from the raw parts (for calibration and eval)."""
        from ragmed.index.parts import load_parts

        return load_parts(self.version_dir / "vectors", domain, kind)

    def info(self) -> dict[str, Any]:
        m = dict(self.manifest)
        m["path"] = str(self.path)
        m["version_dir"] = self.version_dir.name
        m["n_cases"] = self.count("cases")
        m["n_images"] = self.count("images")
        m["n_skipped"] = len(self.skipped())
        return m


def check_encoder_record(encoders: dict, role: str, encoder, path) -> None:
    """Every store's encoder check: the index's record for ``role`` must name the query encoder's id and size."""
    rec = encoders.get(role)
    if rec is None:
        raise IndexStoreError(f"this index has no {role} vectors", path=str(path))
    if rec.get("id") != encoder.id or int(rec.get("dim", -1)) != int(encoder.dim):
        raise EncoderMismatchError(
            f"{role} encoder mismatch: the index was built with {rec.get('id')!r} ({rec.get('dim')}-d), "
            f"the query uses {encoder.id!r} ({encoder.dim}-d)", path=str(path),
            remedy="use the pipeline that built the index, or rebuild the index")


PGVECTOR_STORE_FILE = "store.json"  # in a version directory: the index lives in PostgreSQL (ragmed.index.pgvector)
STORES = Registry("index store")  # backend name -> store class opening an index directory
STORES.register("faiss", IndexStore)
STORES.register("pgvector", "ragmed.index.pgvector:open_pgvector", extra="scale")  # PostgreSQL + pgvector (issue H)


def open_index(path: str | Path, *, backend: str | None = None, **options: Any) -> IndexStore:
    """Open a built index with the named store backend: ``faiss`` (FAISS files + SQLite metadata) or ``pgvector``
    (a directory whose ``store.json`` points to PostgreSQL). ``None``: whichever the directory records."""
    if backend is None:
        try:
            backend = "pgvector" if (resolve_version_dir(path) / PGVECTOR_STORE_FILE).exists() else "faiss"
        except IndexStoreError:
            backend = "faiss"  # (the FAISS store then reports what is missing)
    return STORES.create(backend, path=path, **options)
