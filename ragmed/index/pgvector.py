"""PostgreSQL + pgvector store: vectors, case metadata and filters in one transactional store, HNSW indexes.

For deployments that already run PostgreSQL. One ragmed index lives in one PostgreSQL schema::

    <schema>.meta     (key, value jsonb)          manifest
    <schema>.cases    (rowid, case_id, text, sections, metadata, split, domain, vec vector(d))   text vectors
    <schema>.images   (vec_id, case_id, source, content_hash, modality, body_part, view, domain, split, vec vector(d))
    <schema>.skipped  (row, case_id, path, reason)
    HNSW (vector_ip_ops: inner product on L2-normalised vectors = cosine) on cases.vec and images.vec

The index directory (``DIR/current -> v-…``) keeps what is not rows: ``manifest.json``, ``store.json`` (backend, DSN
without password, schema), the BM25 index, calibration and router side files; ``open_index(DIR)`` sees
``store.json`` and opens this store. :func:`export_index` copies a built FAISS index directory (its metadata and raw
vectors) into PostgreSQL in one transaction and publishes such a directory atomically.

Search filters (``domain``, ``modality``, ``split``) are SQL ``WHERE`` clauses evaluated with the HNSW scan
(pgvector 0.8 iterative index scans, so a selective filter still returns ``k`` rows). The password, if any, is read
from the ``PGPASSWORD`` environment variable or ``~/.pgpass`` by libpq, never stored.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragmed.errors import IndexStoreError
from ragmed.index.base import ManifestProperties
from ragmed.index.store import PGVECTOR_STORE_FILE as STORE_FILE
from ragmed.index.store import CaseRecord, Hit, check_encoder_record, resolve_version_dir

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")


def _psycopg():
    try:
        import psycopg
    except ImportError as e:
        raise IndexStoreError("the pgvector store needs psycopg", remedy="pip install 'ragmed[scale]'") from e
    return psycopg


def _vec(x: np.ndarray) -> str:
    """pgvector's text form of one vector."""
    return "[" + ",".join(map(repr, np.asarray(x, dtype=np.float32).tolist())) + "]"  # exact for float32


def _check_schema(schema: str) -> str:
    if not _IDENT.match(schema):
        raise IndexStoreError(f"schema name {schema!r} must be lower-case letters, digits and _")
    return schema


class PgVectorStore(ManifestProperties):
    """A loaded pgvector index (same interface as :class:`ragmed.index.store.IndexStore`; see ``base.py``)."""

    def __init__(self, dsn: str, schema: str, *, version_dir: str | Path | None = None, ef_search: int | None = None):
        self.dsn = dsn
        self.schema = _check_schema(schema)
        self.path = Path(version_dir) if version_dir is not None else Path(f"pgvector:{schema}")
        self._local = threading.local()
        row = self._q(f"SELECT value FROM {schema}.meta WHERE key='manifest'").fetchone()
        if row is None:
            raise IndexStoreError(f"no ragmed index in schema {schema!r}", path=schema)
        self.manifest = row[0]
        self.version_dir = Path(version_dir) if version_dir is not None else self.path
        self.ef_search = int(ef_search or self.manifest.get("search_params", {}).get("ef_search", 128))

    # --- connection (one per thread) ------------------------------------------------------------------------
    @property
    def con(self):
        con = getattr(self._local, "con", None)
        if con is None or con.closed:
            psycopg = _psycopg()
            con = psycopg.connect(self.dsn, autocommit=True)
            con.execute(f"SET hnsw.ef_search = {int(getattr(self, 'ef_search', 128))}")
            con.execute("SET hnsw.iterative_scan = strict_order")
            self._local.con = con
        return con

    def _q(self, sql: str, params: tuple | list = ()):
        return self.con.execute(sql, params)

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()

    # --- metadata -------------------------------------------------------------------------------------------
    def count(self, kind: str = "cases") -> int:
        table = {"cases": "cases", "images": "images"}[kind]
        return int(self._q(f"SELECT COUNT(*) FROM {self.schema}.{table}").fetchone()[0])

    def cases(self, case_ids: list[str]) -> dict[str, CaseRecord]:
        if not case_ids:
            return {}
        s = self.schema
        out: dict[str, CaseRecord] = {}
        for r in self._q(f"SELECT case_id, text, sections, metadata, split, domain FROM {s}.cases "
                         "WHERE case_id = ANY(%s)", (list(case_ids),)):
            out[r[0]] = CaseRecord(r[0], r[1], r[2], r[3], r[4], r[5])
        for r in self._q(f"SELECT case_id, source, content_hash, modality, body_part, view FROM {s}.images "
                         "WHERE case_id = ANY(%s) ORDER BY vec_id", (list(case_ids),)):
            if r[0] in out:
                out[r[0]].images.append(dict(zip(("source", "content_hash", "modality", "body_part", "view"), r[1:])))
        return out

    def iter_cases(self, batch: int = 1000):
        ids = [r[0] for r in self._q(f"SELECT case_id FROM {self.schema}.cases ORDER BY rowid")]
        for i in range(0, len(ids), batch):
            got = self.cases(ids[i:i + batch])
            yield from (got[c] for c in ids[i:i + batch] if c in got)

    def case_ids_with_hash(self, content_hash: str) -> set[str]:
        return {r[0] for r in self._q(f"SELECT case_id FROM {self.schema}.images WHERE content_hash=%s",
                                      (content_hash,))}

    def skipped(self) -> list[dict[str, Any]]:
        return [dict(zip(("row", "case_id", "path", "reason"), r))
                for r in self._q(f"SELECT row, case_id, path, reason FROM {self.schema}.skipped ORDER BY row, id")]

    def check_encoder(self, role: str, encoder) -> None:
        check_encoder_record(self.encoders, role, encoder, self.path)

    # --- vectors --------------------------------------------------------------------------------------------
    def search(self, kind: str, queries: np.ndarray, k: int, *, domains: list[str] | None = None,
               channel: str | None = None, modality: str | None = None, split: str | None = None
               ) -> list[list[Hit]]:
        """As :meth:`IndexStore.search`, plus SQL filters on ``modality`` (images) and ``split``."""
        from ragmed.index.faiss_utils import check_queries

        role = "image" if kind == "image" else "text"
        if role not in self.encoders:
            return [[] for _ in range(len(np.atleast_2d(queries)))]
        q = check_queries(queries, int(self.encoders[role].get("dim", 0)))
        domains = list(domains or self.domains)
        s = self.schema
        where, params = ["domain = ANY(%(domains)s)"], {"domains": domains}
        if split is not None:
            where.append("split = %(split)s")
            params["split"] = split
        if kind == "image":
            if modality is not None:
                where.append("modality = %(modality)s")
                params["modality"] = modality
            sql = (f"SELECT vec_id, case_id, source, domain, -(vec <#> %(q)s::vector) FROM {s}.images "
                   f"WHERE {' AND '.join(where)} ORDER BY vec <#> %(q)s::vector LIMIT %(k)s")
            kk = k * 3
        else:
            sql = (f"SELECT rowid, case_id, NULL, domain, -(vec <#> %(q)s::vector) FROM {s}.cases "
                   f"WHERE vec IS NOT NULL AND {' AND '.join(where)} ORDER BY vec <#> %(q)s::vector LIMIT %(k)s")
            kk = k
        out = []
        for qv in q:
            rows = self._q(sql, {**params, "q": _vec(qv), "k": kk}).fetchall()
            best: dict[str, Hit] = {}
            for vid, case_id, source, dom, score in rows:  # best first: the first hit of a case is its best
                if case_id not in best:
                    best[case_id] = Hit(case_id, float(score), channel or kind, dom, source, int(vid))
            out.append(sorted(best.values(), key=lambda h: -h.score)[:k])
        return out

    def vectors(self, domain: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
        s = self.schema
        if kind == "image":
            rows = self._q(f"SELECT vec_id, vec::text FROM {s}.images WHERE domain=%s ORDER BY vec_id", (domain,))
        else:
            rows = self._q(f"SELECT rowid, vec::text FROM {s}.cases WHERE domain=%s AND vec IS NOT NULL "
                           "ORDER BY rowid", (domain,))
        rows = rows.fetchall()
        dim = int(self.encoders.get("image" if kind == "image" else "text", {}).get("dim", 0))
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = np.array([json.loads(r[1]) for r in rows], dtype=np.float32)
        return ids, vecs

    def info(self) -> dict[str, Any]:
        m = dict(self.manifest)
        m["path"] = str(self.path)
        m["version_dir"] = self.version_dir.name
        m["store"] = {"backend": "pgvector", "schema": self.schema}
        m["n_cases"] = self.count("cases")
        m["n_images"] = self.count("images")
        m["n_skipped"] = len(self.skipped())
        return m


# --- writing ----------------------------------------------------------------------------------------------------
def _ddl(s: str, dims: dict[str, int]) -> str:
    tdim, idim = dims.get("text", 0), dims.get("image", 0)
    return f"""
CREATE SCHEMA {s};
CREATE TABLE {s}.meta (key TEXT PRIMARY KEY, value JSONB NOT NULL);
CREATE TABLE {s}.cases (rowid BIGINT PRIMARY KEY, case_id TEXT UNIQUE NOT NULL, text TEXT NOT NULL,
    sections JSONB NOT NULL, metadata JSONB NOT NULL, split TEXT, domain TEXT NOT NULL,
    vec {f"vector({tdim})" if tdim else "vector"});
CREATE TABLE {s}.images (vec_id BIGINT PRIMARY KEY, case_id TEXT NOT NULL REFERENCES {s}.cases(case_id),
    source TEXT NOT NULL, content_hash TEXT NOT NULL, modality TEXT, body_part TEXT, view TEXT, domain TEXT NOT NULL,
    split TEXT, vec {f"vector({idim})" if idim else "vector"});
CREATE TABLE {s}.skipped (id BIGSERIAL PRIMARY KEY, row INTEGER, case_id TEXT, path TEXT, reason TEXT NOT NULL);
CREATE INDEX ON {s}.images (case_id);
CREATE INDEX ON {s}.images (content_hash);
"""


def register_binary_vectors(con) -> None:
    """Let ``con`` send numpy vectors in pgvector's binary format (the ``pgvector`` package's psycopg adapters; the
    ``vector`` extension must exist)."""
    try:
        from pgvector.psycopg import register_vector
    except ImportError as e:
        raise IndexStoreError("the pgvector store needs the pgvector package", remedy="pip install 'ragmed[scale]'") \
            from e
    register_vector(con)


def _jsonb(text: str | None):
    """A JSON document already serialised (SQLite keeps it as text), passed to binary COPY without re-parsing."""
    if text is None:
        return None
    from psycopg.types.json import Jsonb

    return Jsonb(text, dumps=_same)


def _same(s: str) -> str:
    return s


def copy_rows(cur, target: str, types: list[str], rows) -> int:
    """Bulk-load ``rows`` into ``target`` (``"schema.table (col, ...)"``) with one binary ``COPY ... FROM STDIN``:
    values travel in PostgreSQL's binary format (vectors as float32, via :func:`register_binary_vectors`), not as
    decimal text. ``types``: the columns' PostgreSQL type names. Returns the number of rows."""
    n = 0
    with cur.copy(f"COPY {target} FROM STDIN WITH (FORMAT BINARY)") as cp:
        cp.set_types(types)
        for row in rows:
            cp.write_row(row)
            n += 1
    return n


def create_hnsw(con, schema: str, *, m: int = 16, ef_construction: int = 64) -> None:
    """HNSW indexes on both vector columns (built after the bulk load: faster than maintaining them row by row)."""
    for table in ("cases", "images"):
        con.execute(f"CREATE INDEX {table}_vec_hnsw ON {schema}.{table} USING hnsw (vec vector_ip_ops) "
                    f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)})")


def export_index(index_dir: str | Path, dsn: str, schema: str, out: str | Path, *, replace: bool = False,
                 m: int = 16, ef_construction: int = 64) -> Path:
    """Copy the FAISS index at ``index_dir`` (metadata + raw vectors) into ``schema`` at ``dsn`` in one
    transaction, build the HNSW indexes, and publish an index directory at ``out`` that opens this store.
    Returns the published version directory."""
    from ragmed.index.store import IndexStore

    psycopg = _psycopg()
    schema = _check_schema(schema)
    src = IndexStore(index_dir, use_gpu=False)
    dims = {role: int(rec["dim"]) for role, rec in src.encoders.items()}
    manifest = dict(src.manifest)
    manifest["store"] = {"backend": "pgvector", "schema": schema, "hnsw": {"m": m, "ef_construction": ef_construction}}
    with psycopg.connect(dsn) as con:  # one transaction: readers see all of it or none
        con.execute("CREATE EXTENSION IF NOT EXISTS vector")
        if replace:
            con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        con.execute(_ddl(schema, dims))
        con.execute(f"INSERT INTO {schema}.meta VALUES ('manifest', %s)", (json.dumps(manifest),))
        text_vecs: dict[int, np.ndarray] = {}
        for dom in src.domains:
            ids, vecs = src.vectors(dom, "text")
            text_vecs.update(zip(ids.tolist(), vecs))
        split_of: dict[str, str | None] = {}
        register_binary_vectors(con)
        with con.cursor() as cur:

            def case_rows():
                for r in src.db.execute("SELECT rowid, case_id, text, sections, metadata, split, domain FROM cases "
                                        "ORDER BY rowid"):
                    split_of[r[1]] = r[5]
                    yield (r[0], r[1], r[2], _jsonb(r[3]), _jsonb(r[4]), r[5], r[6], text_vecs.get(int(r[0])))
            copy_rows(cur, f"{schema}.cases (rowid, case_id, text, sections, metadata, split, domain, vec)",
                      ["int8", "text", "text", "jsonb", "jsonb", "text", "text", "vector"], case_rows())
            for dom in src.domains:
                ids, vecs = src.vectors(dom, "image")
                if not len(ids):
                    continue
                pos = {int(i): j for j, i in enumerate(ids.tolist())}
                rows = ((*tuple(r), split_of.get(r[1]), None if (j := pos.get(int(r[0]))) is None else vecs[j])
                        for r in src.db.execute("SELECT vec_id, case_id, source, content_hash, modality, body_part, "
                                                "view, domain FROM images WHERE domain=? ORDER BY vec_id", (dom,)))
                copy_rows(cur, f"{schema}.images (vec_id, case_id, source, content_hash, modality, body_part, view, "
                          "domain, split, vec)", ["int8"] + ["text"] * 8 + ["vector"], rows)
            copy_rows(cur, f"{schema}.skipped (row, case_id, path, reason)", ["int4", "text", "text", "text"],
                      ((s["row"], s["case_id"], s["path"], s["reason"]) for s in src.skipped()))
        create_hnsw(con, schema, m=m, ef_construction=ef_construction)
    return _publish(src.version_dir, Path(out), dsn, schema, manifest)


def _publish(src_version: Path, out: Path, dsn: str, schema: str, manifest: dict) -> Path:
    """An index directory whose live version holds the side files and ``store.json`` (atomic ``current`` swap)."""
    out.mkdir(parents=True, exist_ok=True)
    version = "v-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.urandom(4).hex()}"
    tmp = out / f".staging-pg-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    skip = {"meta.sqlite", "vectors", "domains", "state.json"}
    shutil.copytree(src_version, tmp, ignore=lambda d, names: [n for n in names if Path(d) == src_version
                                                               and n in skip])
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (tmp / STORE_FILE).write_text(json.dumps({"backend": "pgvector", "dsn": _strip_password(dsn), "schema": schema}))
    os.replace(tmp, out / version)
    link = out / f".current-{os.getpid()}"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(version, link)
    os.replace(link, out / "current")
    for p in out.glob("v-*"):
        if p.name != version:
            shutil.rmtree(p, ignore_errors=True)
    return out / version


def _strip_password(dsn: str) -> str:
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1@", dsn)


def is_pgvector_dir(path: str | Path) -> bool:
    try:
        return (resolve_version_dir(path) / STORE_FILE).exists()
    except IndexStoreError:
        return False


def open_pgvector(path: str | Path, *, dsn: str | None = None) -> PgVectorStore:
    """Open the pgvector store an index directory points to (``dsn`` overrides the recorded one)."""
    vd = resolve_version_dir(path)
    spec = json.loads((vd / STORE_FILE).read_text())
    if spec.get("backend") != "pgvector":
        raise IndexStoreError(f"unknown store backend {spec.get('backend')!r}", path=str(vd))
    return PgVectorStore(dsn or spec["dsn"], spec["schema"], version_dir=vd)
