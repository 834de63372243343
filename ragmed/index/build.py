"""Building an index directory: streamed, resumable, atomic.

Cases are processed in batches of ``index.batch_size``: images are decoded by a small thread pool one batch ahead
of the encoder (memory stays bounded by two batches), vectors are written as parts, and the batch's rows are
committed to SQLite in the same step, so a killed build resumes from the last committed batch. The build happens in
``DIR/.staging``; when it is complete the staging directory becomes ``DIR/v-<timestamp>`` and the ``DIR/current``
symlink is swapped atomically (``os.replace``), so a crash at any point leaves the previous index usable.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragmed.version import __version__
from ragmed.corpus import Case, Corpus, SkippedRow
from ragmed.errors import EncoderMismatchError, IndexStoreError, RagmedError

log = logging.getLogger("ragmed.index")

DDL = """
CREATE TABLE IF NOT EXISTS cases (rowid INTEGER PRIMARY KEY, case_id TEXT UNIQUE NOT NULL, text TEXT NOT NULL,
    sections TEXT NOT NULL, metadata TEXT NOT NULL, split TEXT, domain TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (vec_id INTEGER PRIMARY KEY, case_id TEXT NOT NULL, source TEXT NOT NULL,
    content_hash TEXT NOT NULL, modality TEXT, body_part TEXT, view TEXT, domain TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS images_case ON images(case_id);
CREATE INDEX IF NOT EXISTS images_hash ON images(content_hash);
CREATE TABLE IF NOT EXISTS skipped (row INTEGER, case_id TEXT, path TEXT, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS parts (number INTEGER PRIMARY KEY, n_cases INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS done (case_id TEXT PRIMARY KEY);
"""

Router = Callable[[Case, list], str]


@dataclass
class BuildReport:
    path: str
    version: str
    n_cases: int
    n_images: int
    n_text: int
    added: int
    resumed_from: int
    skipped: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    post_build: dict[str, Any] = field(default_factory=dict)  # BM25 / calibration / router, written before the swap

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _key(corpus: Corpus, config_dict: dict, enc_ids: dict, base: str | None) -> str:
    h = hashlib.sha256(json.dumps([corpus.checksum(), config_dict, enc_ids, base, __version__], sort_keys=True,
                                  default=str).encode())
    return h.hexdigest()[:16]


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("PRAGMA synchronous=FULL")
    con.executescript(DDL)
    return con


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="case", disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5)


def should_fit(icfg, corpus) -> bool:
    """``index.fit_image_encoder``: true / false, or ``auto``: fit when the corpus has at least
    ``fit_auto_min_images`` images (where adapting to the corpus pays for its minutes)."""
    if icfg.fit_image_encoder == "auto":
        return sum(len(c.images) for c in corpus.cases) >= icfg.fit_auto_min_images
    return bool(icfg.fit_image_encoder)


def build_index(corpus: Corpus, out: str | Path, config=None, *, image_encoder=None, text_encoder=None,
                router: Router | None = None, add: bool = False, progress: bool = True,
                stop_after_batches: int | None = None, fit: bool | None = None,
                image_features: Callable[[Any], np.ndarray] | None = None,
                before_publish: Callable[..., dict] | None = None) -> BuildReport:
    """Build (or, with ``add``, extend) the index at ``out`` from ``corpus``, decoding each image once.

    ``config``: a :class:`ragmed.config.PipelineConfig` (default pipeline when ``None``).
    ``router(case, images) -> domain`` assigns each case a domain sub-index (``"all"`` when ``None``).
    ``fit``: fit the image tower to the corpus (True / False); None: as ``index.fit_image_encoder`` says. When it
    fits, the decode pass keeps each image's preprocessed tower input (a few kB, spooled to disk in the staging
    directory); the fit reads its sample from there and the fitted tower then encodes the spool: no second decode.
    ``image_features(MedicalImage) -> 1-d array``: statistics stored beside each image vector (vector parts of kind
    ``features``), e.g. what the router's classifier is fitted on; an ``add`` build reuses the stored ones.
    ``before_publish(store, image_encoder=…, text_encoder=…) -> dict``: called on the complete staging version
    (vectors, FAISS, metadata, BM25 and calibration written), before the swap; what it writes is published with the
    rest, and its summary is the report's ``post_build``.
    ``stop_after_batches``: for tests, stop (as if killed) after that many committed batches.
    """
    from ragmed.config import PipelineConfig
    from ragmed.encoders import create_encoder

    t0 = time.perf_counter()
    cfg = config or PipelineConfig()
    icfg = cfg.index
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if text_encoder is None:
        text_encoder = create_encoder(cfg.encoders.text.name, role="text", **cfg.encoders.text.params)
    if image_encoder is None and cfg.encoders.image is not None:
        image_encoder = create_encoder(cfg.encoders.image.name, role="image", **cfg.encoders.image.params)
    base_dir = (out / "current").resolve() if add and (out / "current").exists() else None
    if add and base_dir is None and (out / "manifest.json").exists():
        base_dir = out
    fitted_dir = None
    if base_dir is not None:
        image_encoder, fitted_dir = _check_base(out, base_dir, image_encoder, text_encoder)
    fitting = image_encoder is not None and base_dir is None and (should_fit(icfg, corpus) if fit is None else fit)
    if fitting:
        from ragmed.encoders.train import check_fittable

        check_fittable(image_encoder, text_encoder)  # before the decode pass, not after it
    enc_ids = {"text": {"id": text_encoder.id, "dim": int(text_encoder.dim), "space": text_encoder.space}}
    if image_encoder is not None:
        enc_ids["image"] = {"id": image_encoder.id, "dim": int(image_encoder.dim), "space": image_encoder.space}
        if fitting:
            enc_ids["image"]["fit"] = True  # (the fitted tower's id replaces the base one once fitted)
        if fitted_dir is not None:  # the fitted tower travels inside the index version (swapped in atomically)
            enc_ids["image"]["model_dir"] = "image_encoder"
    key = _key(corpus, cfg.to_dict(), enc_ids, base_dir.name if base_dir else None)

    staging = _open_staging(out, key, base_dir)
    resumed_from = 0
    con = _connect(staging / "meta.sqlite")
    vec_root = staging / "vectors"
    spool = staging / "spool" if fitting else None
    _drop_uncommitted_parts(con, vec_root)
    done = {r[0] for r in con.execute("SELECT case_id FROM done")}
    existing = {r[0] for r in con.execute("SELECT case_id FROM cases")}
    if not base_dir:
        resumed_from = len(done)
    todo: list[Case] = []
    pre_skipped: list[SkippedRow] = []
    for c in corpus.cases:
        if c.id in done:
            continue
        if c.id in existing:
            pre_skipped.append(SkippedRow(c.row, c.id, None, "case id already in the index"))
            continue
        todo.append(c)
    if not done or base_dir:
        _record_skips(con, corpus.skipped + pre_skipped)
    next_part = (con.execute("SELECT COALESCE(MAX(number), -1) FROM parts").fetchone()[0]) + 1
    timings = {"decode": 0.0, "encode_image": 0.0, "encode_text": 0.0, "write": 0.0}
    if progress and fitting:
        _say(f"decoding the corpus's {sum(len(c.images) for c in corpus.cases)} images once: the image encoder is "
             f"then fitted to them (index.fit_image_encoder: {icfg.fit_image_encoder}; --no-fit skips the fit)")
    step = _Step(con, vec_root, router, image_encoder, text_encoder, timings, spool, image_features)
    added = _decode_pass(corpus, todo, icfg, step, next_part, progress, stop_after_batches, con)
    if fitting:
        image_encoder = _fit_and_encode(con, spool, vec_root, corpus, image_encoder, text_encoder, icfg,
                                        out / ".fit", progress, timings)
        fitted_dir = Path(image_encoder.path)
        enc_ids["image"] = {"id": image_encoder.id, "dim": int(image_encoder.dim), "space": image_encoder.space,
                            "model_dir": "image_encoder"}
    tf = time.perf_counter()
    if fitted_dir is not None:
        shutil.copytree(fitted_dir, staging / "image_encoder", dirs_exist_ok=True)
    manifest = _finalize(con, staging, cfg, enc_ids, corpus)
    timings["finalize"] = time.perf_counter() - tf
    n_cases = con.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
    n_images = con.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    skipped = [dict(zip(("row", "case_id", "path", "reason"), r))
               for r in con.execute("SELECT row, case_id, path, reason FROM skipped ORDER BY row, rowid")]
    tp = time.perf_counter()
    try:  # (a build killed in here resumes with every case done: it redoes only these steps)
        post = _derived(staging, text_encoder, image_encoder, enc_ids, progress)
        if before_publish is not None:
            from ragmed.index.store import IndexStore

            post.update(before_publish(IndexStore(staging, use_gpu=False), image_encoder=image_encoder,
                                       text_encoder=text_encoder) or {})
        con.execute("DROP TABLE done")
        con.execute("DROP TABLE IF EXISTS fitted")
        con.commit()
    finally:
        con.close()
    timings["post_build"] = time.perf_counter() - tp
    version = _swap_in(out, staging, manifest)  # every artefact is written: publish
    shutil.rmtree(out / ".fit", ignore_errors=True)  # the fitted tower now lives in the version (image_encoder/)
    log.info("post-build: %s", post)
    return BuildReport(path=str(out), version=version, n_cases=n_cases, n_images=n_images, n_text=n_cases,
                       added=added, resumed_from=resumed_from, skipped=skipped,
                       seconds=time.perf_counter() - t0, timings=timings, post_build=post)


def _check_base(out: Path, base_dir: Path, image_encoder, text_encoder):
    """Adding to ``base_dir``: its encoders must be this pipeline's; a fitted tower embeds the new cases too."""
    base_manifest = json.loads((base_dir / "manifest.json").read_text())
    base_image = base_manifest["encoders"].get("image") or {}
    fitted_dir = None
    if image_encoder is not None and base_image.get("model_dir"):
        from ragmed.encoders.default import RagmedImageEncoder

        fitted_dir = base_dir / base_image["model_dir"]
        image_encoder = RagmedImageEncoder(fitted_dir, batch_size=getattr(image_encoder, "batch_size", 64),
                                           threads=getattr(image_encoder, "threads", None))
    for role, enc in (("text", text_encoder), ("image", image_encoder)):
        rec = base_manifest["encoders"].get(role)
        if enc is not None and rec is not None and (rec["id"] != enc.id or int(rec["dim"]) != int(enc.dim)):
            raise EncoderMismatchError(f"cannot add: the index's {role} encoder is {rec['id']!r} ({rec['dim']}-d), "
                                       f"this pipeline's is {enc.id!r} ({enc.dim}-d)", path=str(out))
    return image_encoder, fitted_dir


def _decode_pass(corpus: Corpus, todo: list[Case], icfg, step: "_Step", next_part: int, progress: bool,
                 stop_after_batches: int | None, con) -> int:
    """Decode each case's images (a thread pool, one batch ahead) and commit batch after batch; returns the number of
    cases added."""
    from ragmed.encoders.memory import trim_heap
    from ragmed.io import load_image

    root = corpus.root

    def decode(case: Case):
        images, errors = [], []
        for p in case.images:
            try:
                images.append(load_image(p, root=root, allow_burned_in=icfg.allow_burned_in))
            except RagmedError as e:
                errors.append(str(e))
        return case, images, errors

    batches = [todo[i:i + icfg.batch_size] for i in range(0, len(todo), icfg.batch_size)]
    bar = _progress(len(corpus.cases), progress, f"indexing {Path(corpus.source).name}")
    bar.update(len(corpus.cases) - len(todo))
    added = 0
    with ThreadPoolExecutor(max_workers=max(1, icfg.decode_workers)) as pool:
        def submit(batch):
            return [pool.submit(decode, c) for c in batch]

        pending = submit(batches[0]) if batches else None
        for bi, batch in enumerate(batches):
            td = time.perf_counter()
            decoded = [f.result() for f in pending]
            step.timings["decode"] += time.perf_counter() - td
            pending = submit(batches[bi + 1]) if bi + 1 < len(batches) else None  # decode ahead while encoding
            added += step.commit(next_part, decoded)
            del decoded  # this batch's images and tensors: freed, and the freed heap handed back (trim_heap)
            trim_heap()
            next_part += 1
            bar.update(len(batch))
            if stop_after_batches is not None and bi + 1 >= stop_after_batches:
                bar.close()
                con.close()
                raise KeyboardInterrupt("stopped by stop_after_batches (test hook)")
    bar.close()
    return added


def _say(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _derived(staging: Path, text_encoder, image_encoder, enc_ids: dict, progress: bool) -> dict:
    """BM25 over the report text and the retrieval calibration (channel quantiles + evidence floors), written into
    the staging version."""
    from ragmed.index.bm25 import BM25Channel
    from ragmed.index.calibrate import Calibrator, calibrate
    from ragmed.index.store import IndexStore

    if progress:
        _say("indexing the report text (BM25) and calibrating retrieval scores")
    store = IndexStore(staging, use_gpu=False)
    summary: dict = {}
    bm25 = BM25Channel.build(store)
    if bm25 is not None:
        bm25.save(staging)
        summary["bm25_docs"] = len(bm25.case_ids)
    cal = calibrate(store, text_encoder=text_encoder, image_encoder_space=enc_ids.get("image", {}).get("space"),
                    bm25=bm25)
    Calibrator(cal).save(staging)
    summary["calibrated"] = {d: sorted(v) for d, v in cal["domains"].items()}
    return summary


def _open_staging(out: Path, key: str, base_dir: Path | None) -> Path:
    """``out/.staging``: resumed when an interrupted build with the same inputs (``key``) left it, else started afresh
    (from a copy of ``base_dir``'s metadata and hard links to its vector parts when adding)."""
    staging = out / ".staging"
    state_file = staging / "state.json"
    if staging.exists():
        try:
            state = json.loads(state_file.read_text())
        except (OSError, json.JSONDecodeError):
            state = {}
        if state.get("key") != key:
            shutil.rmtree(staging)
    if not staging.exists():
        tmp = out / f".staging-new-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        if base_dir is not None:
            shutil.copy2(base_dir / "meta.sqlite", tmp / "meta.sqlite")
            shutil.copytree(base_dir / "vectors", tmp / "vectors", copy_function=os.link)
        (tmp / "state.json").write_text(json.dumps({"key": key, "started": time.time()}))
        os.replace(tmp, staging)
    return staging


def _record_skips(con, rows: list[SkippedRow]) -> None:
    con.executemany("INSERT INTO skipped(row, case_id, path, reason) VALUES (?,?,?,?)",
                    [(s.row, s.case_id, s.path, s.reason) for s in rows])
    con.commit()


def _drop_uncommitted_parts(con, vec_root: Path) -> None:
    committed = {r[0] for r in con.execute("SELECT number FROM parts")}
    if not vec_root.exists():
        return
    for p in vec_root.glob("*/*.npz"):
        try:
            number = int(p.stem.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            p.unlink()
            continue
        if number not in committed:
            p.unlink()
    for p in vec_root.glob("*/.*.tmp.npz"):
        p.unlink()


class _Step:
    """One committed batch: route, encode (or, before a fit, spool the tower inputs), write parts and rows."""

    def __init__(self, con, vec_root: Path, router, image_encoder, text_encoder, timings: dict, spool: Path | None,
                 image_features=None):
        self.con, self.vec_root, self.router, self.timings = con, vec_root, router, timings
        self.image_encoder, self.text_encoder, self.spool, self.image_features = (image_encoder, text_encoder, spool,
                                                                                  image_features)

    def commit(self, part_no: int, decoded) -> int:
        from ragmed.index.parts import write_part

        con, image_encoder = self.con, self.image_encoder
        rows_ok = []
        skips = []
        for case, images, errors in decoded:
            if errors:
                skips.append(SkippedRow(case.row, case.id, None,
                                        errors[0] + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else "")))
                continue
            if image_encoder is None and not case.text:
                skips.append(SkippedRow(case.row, case.id, None, "no text and no image encoder configured"))
                continue
            domain = self.router(case, images) if self.router is not None else "all"
            rows_ok.append((case, images, domain))
        ti = time.perf_counter()
        all_images = [im for _, ims, _ in rows_ok for im in ims] if image_encoder is not None else []
        img_vecs = tower_in = None
        if all_images and self.spool is not None:  # fitting: the tower's inputs now, the vectors after the fit
            tower_in = np.stack([image_encoder.preprocess(im) for im in all_images])
        elif all_images:
            img_vecs = image_encoder.encode_images(all_images)
        feats = (np.stack([np.asarray(self.image_features(im), dtype=np.float32) for im in all_images])
                 if all_images and self.image_features is not None else None)
        self.timings["encode_image"] += time.perf_counter() - ti
        tt = time.perf_counter()
        with_text = [(c, d) for c, _, d in rows_ok if c.text]
        txt_vecs = self.text_encoder.encode_texts([c.text for c, _ in with_text]) if with_text else None
        text_pos = {c.id: i for i, (c, _) in enumerate(with_text)}
        self.timings["encode_text"] += time.perf_counter() - tt
        tw = time.perf_counter()
        try:
            con.execute("BEGIN")
            by_domain_img: dict[str, tuple[list[int], list[int]]] = {}
            by_domain_txt: dict[str, tuple[list[int], list[int]]] = {}
            k = 0
            for case, images, domain in rows_ok:
                cur = con.execute("INSERT INTO cases(case_id, text, sections, metadata, split, domain) "
                                  "VALUES (?,?,?,?,?,?)", (case.id, case.text, json.dumps(case.sections),
                                                          json.dumps(case.metadata), case.split, domain))
                rowid = cur.lastrowid
                if case.text:
                    ids, pos = by_domain_txt.setdefault(domain, ([], []))
                    ids.append(rowid)
                    pos.append(text_pos[case.id])
                for im in images if image_encoder is not None else []:
                    cur = con.execute("INSERT INTO images(case_id, source, content_hash, modality, body_part, view, "
                                      "domain) VALUES (?,?,?,?,?,?,?)", (case.id, im.source, im.content_hash,
                                                                        im.modality, im.body_part, im.view, domain))
                    ids, pos = by_domain_img.setdefault(domain, ([], []))
                    ids.append(cur.lastrowid)
                    pos.append(k)
                    k += 1
            for domain, (ids, pos) in by_domain_img.items():
                if img_vecs is not None:
                    write_part(self.vec_root, domain, "image", part_no, np.array(ids), img_vecs[pos])
                if feats is not None:
                    write_part(self.vec_root, domain, "features", part_no, np.array(ids), feats[pos])
            if tower_in is not None:
                _write_spool(self.spool, part_no, by_domain_img, tower_in)
            for domain, (ids, pos) in by_domain_txt.items():
                write_part(self.vec_root, domain, "text", part_no, np.array(ids), txt_vecs[pos])
            con.executemany("INSERT INTO skipped(row, case_id, path, reason) VALUES (?,?,?,?)",
                            [(s.row, s.case_id, s.path, s.reason) for s in skips])
            con.execute("INSERT INTO parts(number, n_cases) VALUES (?,?)", (part_no, len(rows_ok)))
            con.executemany("INSERT OR IGNORE INTO done(case_id) VALUES (?)", [(c.id,) for c, _, _ in decoded])
            con.commit()
        except BaseException:
            con.rollback()
            raise
        self.timings["write"] += time.perf_counter() - tw
        return len(rows_ok)


# --- fitting the image tower from the decode pass's own images ------------------------------------------------
def _write_spool(spool: Path, part_no: int, by_domain: dict, tower_in: np.ndarray) -> None:
    """``spool/part-<n>.npz``: the batch's tower inputs (uint8), their vector ids and domains, in commit order."""
    order = sorted((i, p, d) for d, (ids, pos) in by_domain.items() for i, p in zip(ids, pos))
    spool.mkdir(parents=True, exist_ok=True)
    tmp, final = spool / f".part-{part_no:06d}.tmp.npz", spool / f"part-{part_no:06d}.npz"
    np.savez(tmp, ids=np.array([i for i, _, _ in order], dtype=np.int64),
             domains=np.array([d for _, _, d in order]), arrays=tower_in[[p for _, p, _ in order]])
    os.replace(tmp, final)


def _spool_parts(spool: Path) -> list[Path]:
    return sorted(spool.glob("part-*.npz")) if spool.exists() else []


def _fit_from_spool(con, spool: Path, corpus: Corpus, image_encoder, text_encoder, icfg, work_dir: Path,
                    progress: bool):
    """Fit the tower on the spooled images: the same candidates, seeded sample and texts as
    :func:`ragmed.encoders.fit_to_corpus` draws from a corpus (images of cases with a report, every image when the
    image–image term is on), gathered into a disk-backed array so that memory does not grow with the sample."""
    from ragmed.encoders import fit_to_corpus
    from ragmed.encoders.memory import RowFile, trim_heap
    from ragmed.encoders.train import TrainSet, fit_sample

    textless = icfg.fit_ssl_weight > 0
    where = "" if textless else " WHERE cases.text != ''"
    query = ("SELECT images.vec_id, cases.text, cases.metadata FROM images JOIN cases ON images.case_id = "
             f"cases.case_id{where} ORDER BY images.vec_id")
    n_cand = con.execute(f"SELECT COUNT(*) FROM ({query})").fetchone()[0]
    keep = set(fit_sample(n_cand, icfg.fit_max_images).tolist())
    chosen = [row for i, row in enumerate(con.execute(query)) if i in keep]  # streamed: only the sample is held
    slot = {vid: j for j, (vid, _, _) in enumerate(chosen)}
    size = int(image_encoder.preprocess_config.size)
    work_dir.mkdir(parents=True, exist_ok=True)
    arr_path = work_dir / "trainset.u8"
    # a plain file read with pread (RowFile), not a memmap: the rows the fit reads do not stay mapped into this
    # process, so its resident memory does not grow with the sample (4,096 × 112² × 3 B = 154 MB)
    arrays = RowFile.create(arr_path, len(chosen), (size, size, 3), np.uint8)
    filled = 0
    try:
        for part in _spool_parts(spool):
            with np.load(part) as z:
                ids, a = z["ids"], z["arrays"]
                for r, vid in enumerate(ids):
                    j = slot.get(int(vid))
                    if j is not None:
                        arrays.write_row(j, a[r])
                        filled += 1
            del a
    finally:
        arrays.close()
    if filled != len(chosen):
        raise IndexStoreError(f"the build's image spool holds {filled} of the {len(chosen)} images to fit on",
                              path=str(spool), remedy="delete the index's .staging directory and build again")
    vocab: dict[str, int] = {}
    text_ids = [[vocab.setdefault(text, len(vocab))] if text else [] for _, text, _ in chosen]
    domains = [json.loads(meta).get("domain", "corpus") for _, _, meta in chosen]
    data = TrainSet(arrays=arrays, text_ids=text_ids, texts=list(vocab), domains=domains)
    del chosen, slot, keep
    trim_heap()
    try:
        return fit_to_corpus(image_encoder, corpus, text_encoder, epochs=icfg.fit_epochs,
                             ssl_weight=icfg.fit_ssl_weight, min_steps=icfg.fit_min_steps,
                             max_steps=icfg.fit_max_steps, max_images=icfg.fit_max_images, work_dir=work_dir,
                             progress=progress, trainset=data)
    finally:
        arrays.close()
        del data
        arr_path.unlink(missing_ok=True)


def _fit_and_encode(con, spool: Path, vec_root: Path, corpus: Corpus, image_encoder, text_encoder, icfg,
                    work_dir: Path, progress: bool, timings: dict):
    """Fit the tower on the spool, encode the spool with it, drop the spool; a resumed build whose earlier run got
    that far reloads the fitted tower (recorded in the ``fitted`` table) instead."""
    from ragmed.encoders.default import RagmedImageEncoder

    con.execute("CREATE TABLE IF NOT EXISTS fitted (model TEXT NOT NULL)")
    row = con.execute("SELECT model FROM fitted").fetchone()
    if row is not None and Path(row[0]).exists():
        return RagmedImageEncoder(row[0], batch_size=image_encoder.batch_size, threads=image_encoder.threads)
    tfit = time.perf_counter()
    fitted = _fit_from_spool(con, spool, corpus, image_encoder, text_encoder, icfg, work_dir, progress)
    timings["fit"] = time.perf_counter() - tfit
    _encode_spool(spool, vec_root, fitted, timings)
    con.execute("INSERT INTO fitted(model) VALUES (?)", (str(fitted.path),))
    con.commit()
    shutil.rmtree(spool, ignore_errors=True)
    return fitted


def _encode_spool(spool: Path, vec_root: Path, image_encoder, timings: dict) -> None:
    """Encode the spooled tower inputs with the fitted tower, batch by batch as the decode pass committed them (each
    batch's vectors are what ``encode_images`` of its decoded images gives; rewriting a part is idempotent)."""
    from ragmed.encoders.base import l2_normalise
    from ragmed.encoders.memory import trim_heap
    from ragmed.index.parts import write_part

    bs = int(image_encoder.batch_size)
    for part in _spool_parts(spool):
        ti = time.perf_counter()
        with np.load(part) as z:
            ids, domains, arrays = z["ids"], z["domains"], z["arrays"]
        vecs = l2_normalise(np.concatenate([image_encoder.encode_arrays(arrays[i:i + bs])
                                            for i in range(0, len(arrays), bs)]))
        timings["encode_image"] += time.perf_counter() - ti
        del arrays
        trim_heap()
        number = int(part.stem.rsplit("-", 1)[1])
        for dom in dict.fromkeys(domains.tolist()):
            m = domains == dom
            write_part(vec_root, str(dom), "image", number, ids[m], vecs[m])


def _finalize(con, staging: Path, cfg, enc_ids, corpus) -> dict:
    from ragmed.index.faiss_utils import build_faiss, resolve_factory
    from ragmed.index.parts import domains_in, load_parts

    import faiss

    vec_root = staging / "vectors"
    domains_meta: dict[str, Any] = {}
    dom_dir = staging / "domains"
    shutil.rmtree(dom_dir, ignore_errors=True)
    for domain in domains_in(vec_root):
        domains_meta[domain] = {}
        for kind in ("image", "text"):
            ids, vecs = load_parts(vec_root, domain, kind)
            if len(ids) == 0:
                continue
            factory = resolve_factory(cfg.index.factory, len(ids), cfg.index.auto_flat_below)
            index = build_faiss(vecs, ids, factory)
            (dom_dir / domain).mkdir(parents=True, exist_ok=True)
            faiss.write_index(index, str(dom_dir / domain / f"{kind}.faiss"))
            domains_meta[domain][kind] = {"n": int(len(ids)), "factory": factory}
    n_cases = con.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
    if n_cases == 0:
        raise IndexStoreError("nothing to index: every case was skipped", path=corpus.source,
                              remedy="see the skipped rows above")
    manifest = index_manifest(cfg, enc_ids, domains_meta, corpus, n_cases)
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def index_manifest(cfg, enc_ids: dict, domains_meta: dict, corpus: Corpus, n_cases: int, **extra) -> dict:
    """An index version's ``manifest.json`` (every build engine writes this one shape; ``extra``: engine details)."""
    return {
        "schema": 1,
        "ragmed_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pipeline": {"name": cfg.name, "source": cfg.source, "config": cfg.to_dict()},
        "encoders": enc_ids,
        "metric": "cosine",
        "factory": cfg.index.factory,
        "search_params": {"ef_search": cfg.index.ef_search, "nprobe": cfg.index.nprobe},
        "domains": domains_meta,
        "corpus": {"source": Path(corpus.source).name, "format": corpus.format, "checksum": corpus.checksum(),
                   "n_cases": n_cases},
        **extra,
    }


def _swap_in(out: Path, staging: Path, manifest: dict) -> str:
    version = "v-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.urandom(4).hex()}"
    (staging / "state.json").unlink(missing_ok=True)
    os.replace(staging, out / version)
    link_tmp = out / f".current-{os.getpid()}"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    os.symlink(version, link_tmp)
    old = os.readlink(out / "current") if (out / "current").is_symlink() else None
    os.replace(link_tmp, out / "current")  # atomic swap
    _fsync_dir(out)
    for p in out.glob("v-*"):  # keep the live version only; older ones are no longer referenced
        if p.name != version:
            shutil.rmtree(p, ignore_errors=True)
    log.info("index %s now at %s (was %s)", out, version, old)
    return version


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
