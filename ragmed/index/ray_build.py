"""The Ray Data build engine: ``ragmed index build --engine ray [--address auto|ray://…]`` (extra ``scale``).

The manifest becomes a Ray Dataset of shards (``shard_size`` cases each, in manifest order). An actor pool decodes
and de-identifies the images (``ragmed.io.load_image``, exactly as the local build) and encodes images and report text;
each actor loads its encoders once, and asks Ray for a GPU when ``gpus_per_worker`` is set. Each actor writes its
shard's records, skipped rows and vectors as one Parquet file, atomically (``staging/shards/shard-NNNNNN.parquet``).
A re-run with the same inputs skips the shards already written (resumable after a crash or ``stop_after_shards``).

The driver then reads the shards in order — one at a time, so its memory is one shard plus the index — assigns the
same vector ids as the local build (case rowids and image vec_ids in manifest order), commits each shard's rows to
``meta.sqlite`` and its vectors as a part, builds the per-domain FAISS indexes and publishes the version atomically,
as the local build does. Layouts: ``monolithic`` (the local build's index, built the same way: same top-k) or
``ondisk`` (an IVF factory: quantiser trained on a sample of the shards, each shard added as a block, the blocks'
inverted lists merged into one memory-mapped ``.ivfdata`` file; see ``ondisk.py``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ragmed.version import __version__
from ragmed.corpus import Case, Corpus
from ragmed.errors import IndexStoreError, RagmedError

log = logging.getLogger("ragmed.index.ray")

LAYOUTS = ("monolithic", "ondisk")


def _encoders(cfg):
    from ragmed.encoders import create_encoder

    text = create_encoder(cfg.encoders.text.name, role="text", **cfg.encoders.text.params)
    image = None
    if cfg.encoders.image is not None:
        image = create_encoder(cfg.encoders.image.name, role="image", **cfg.encoders.image.params)
    return text, image


class ShardEncoder:
    """A Ray Data actor: loads the encoders (and the router) once, then decodes + encodes one shard per call and
    writes it as Parquet. Returns one summary row per shard."""

    def __init__(self, cfg_dict: dict, shard_dir: str, root: str, router_factory=None, threads: int = 1):
        import torch

        from ragmed.config import PipelineConfig

        torch.set_num_threads(max(1, threads))  # this actor's process only: its share of the node's cores
        # (the encoders keep to it: RAGMED_THREADS is set in the actors' runtime environment)
        self.cfg = PipelineConfig.from_dict(cfg_dict)
        self.text, self.image = _encoders(self.cfg)
        self.router = router_factory(self.text, self.image) if router_factory is not None else None
        self.shard_dir, self.root = Path(shard_dir), Path(root)
        ids = {"text": {"id": self.text.id, "dim": int(self.text.dim), "space": self.text.space}}
        if self.image is not None:
            ids["image"] = {"id": self.image.id, "dim": int(self.image.dim), "space": self.image.space}
        tmp = self.shard_dir / f".encoders-{os.getpid()}.json.tmp"
        tmp.write_text(json.dumps(ids))
        os.replace(tmp, self.shard_dir / "encoders.json")  # what the manifest records

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = {"shard": [], "n_cases": [], "n_images": [], "n_skipped": [], "seconds": [], "cpu_seconds": [],
               "pid": [], "ended": []}
        for shard, cases_json in zip(batch["shard"], batch["cases"]):
            t, c0 = time.perf_counter(), time.process_time()
            cases = [Case(**c) for c in json.loads(cases_json)]
            table = encode_shard(cases, self.root, self.text, self.image, self.router, self.cfg.index.allow_burned_in)
            write_shard(table, self.shard_dir / f"shard-{int(shard):06d}.parquet")
            kinds = table.column("kind").to_pylist()
            out["shard"].append(int(shard))
            out["n_cases"].append(kinds.count("case"))
            out["n_images"].append(kinds.count("image"))
            out["n_skipped"].append(kinds.count("skip"))
            out["seconds"].append(time.perf_counter() - t)
            out["cpu_seconds"].append(time.process_time() - c0)
            out["pid"].append(os.getpid())
            out["ended"].append(time.time())  # wall clock, for the steady-state window across actors
        return out


def encode_shard(cases: list[Case], root: Path, text_encoder, image_encoder, router, allow_burned_in: bool):
    """Decode (de-identifying), route and encode the cases of one shard: an Arrow table of ``case`` rows (with the
    text vector), ``image`` rows (with the image vector) and ``skip`` rows, in manifest order."""
    import pyarrow as pa

    from ragmed.io import load_image

    ok, rows = [], []
    for case in cases:
        images, errors = [], []
        for p in case.images:
            try:
                images.append(load_image(p, root=root, allow_burned_in=allow_burned_in))
            except RagmedError as e:
                errors.append(str(e))
        if errors:
            rows.append({"kind": "skip", "case_id": case.id, "row": case.row,
                         "reason": errors[0] + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else "")})
            continue
        if image_encoder is None and not case.text:
            rows.append({"kind": "skip", "case_id": case.id, "row": case.row,
                         "reason": "no text and no image encoder configured"})
            continue
        ok.append((case, images, router(case, images) if router is not None else "all"))
    all_images = [im for _, ims, _ in ok for im in ims] if image_encoder is not None else []
    img_vecs = image_encoder.encode_images(all_images) if all_images else None
    texts = [c.text for c, _, _ in ok if c.text]
    txt_vecs = text_encoder.encode_texts(texts) if texts else None
    k = t = 0
    out = []
    for case, images, domain in ok:
        vec = None
        if case.text:
            vec, t = txt_vecs[t], t + 1
        out.append({"kind": "case", "case_id": case.id, "row": case.row, "text": case.text,
                    "sections": json.dumps(case.sections), "metadata": json.dumps(case.metadata), "split": case.split,
                    "domain": domain, "vec": vec})
        for im in images if image_encoder is not None else []:
            out.append({"kind": "image", "case_id": case.id, "source": im.source, "content_hash": im.content_hash,
                        "modality": im.modality, "body_part": im.body_part, "view": im.view, "domain": domain,
                        "vec": img_vecs[k]})
            k += 1
    out.extend(rows)
    cols = ["kind", "case_id", "row", "text", "sections", "metadata", "split", "domain", "source", "content_hash",
            "modality", "body_part", "view", "reason"]
    data = {c: [r.get(c) for r in out] for c in cols}
    data["row"] = [int(r["row"]) if r.get("row") is not None else None for r in out]
    data["vec"] = [None if r.get("vec") is None else np.asarray(r["vec"], dtype=np.float32) for r in out]
    schema = pa.schema([(c, pa.int64() if c == "row" else pa.string()) for c in cols] +
                       [("vec", pa.list_(pa.float32()))])
    return pa.table(data, schema=schema)


def write_shard(table, path: Path) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _key(corpus: Corpus, cfg_dict: dict, shard_size: int, layout: str) -> str:
    h = hashlib.sha256(json.dumps([corpus.checksum(), cfg_dict, shard_size, layout, __version__, "ray"],
                                  sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def ray_build_index(corpus: Corpus, out: str | Path, config=None, *, address: str | None = None, workers: int = 2,
                    cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0, shard_size: int = 128,
                    layout: str = "monolithic", router_factory: Callable | None = None, text_encoder=None,
                    progress: bool = True, stop_after_shards: int | None = None, ray_init: dict | None = None):
    """Build the index at ``out`` from ``corpus`` on Ray (a new build; ``--add`` stays with the local engine).

    ``address``: an existing cluster (``auto`` or ``ray://host:port``); ``None`` starts a local one with ``workers``
    CPUs. ``router_factory(text_encoder, image_encoder) -> router`` runs inside each actor. ``text_encoder``: the
    driver's, for calibration (loaded from the config when ``None``). ``stop_after_shards``: for tests, stop after
    that many new shards (as if killed). Returns a :class:`ragmed.index.build.BuildReport`."""
    import ray

    from ragmed.config import PipelineConfig
    from ragmed.index.build import should_fit

    t0 = time.perf_counter()
    cfg = config or PipelineConfig()
    if layout not in LAYOUTS:
        raise IndexStoreError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    if cfg.encoders.image is not None and should_fit(cfg.index, corpus):
        raise IndexStoreError("the Ray engine embeds with the configured image encoder; fitting it to the corpus "
                              "(index.fit_image_encoder) is done by the local engine",
                              remedy="set index.fit_image_encoder: false, or build with --engine local")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_dict = cfg.to_dict()
    key = _key(corpus, cfg_dict, shard_size, layout)
    staging = out / ".staging-ray"
    state_file = staging / "state.json"
    if staging.exists():
        try:
            same = json.loads(state_file.read_text()).get("key") == key
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            shutil.rmtree(staging)
    shard_dir = staging / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps({"key": key, "started": time.time()}))
    for p in shard_dir.glob(".*.tmp"):
        p.unlink()
    shards = [corpus.cases[i:i + shard_size] for i in range(0, len(corpus.cases), shard_size)]
    done = {int(p.stem.split("-")[1]) for p in shard_dir.glob("shard-*.parquet")}
    pending = [i for i in range(len(shards)) if i not in done]
    if stop_after_shards is not None:
        pending = pending[:stop_after_shards]
    timings: dict[str, float] = {}
    shard_stats: list[dict] = []
    if pending:
        te = time.perf_counter()
        started_here = False
        if not ray.is_initialized():
            kw = {"address": address, "include_dashboard": False, "log_to_driver": False}
            if address is None:
                kw["num_cpus"] = max(1, int(round(workers * cpus_per_worker)))
            kw.update(ray_init or {})
            ray.init(**kw)
            started_here = True
        try:
            shard_stats = _run_actors(ray, corpus, shards, pending, shard_dir, cfg_dict, router_factory, workers,
                                      cpus_per_worker, gpus_per_worker)
        finally:
            if started_here:
                ray.shutdown()
        timings["encode"] = time.perf_counter() - te
    if stop_after_shards is not None and len(done) + len(pending) < len(shards):
        raise KeyboardInterrupt("stopped by stop_after_shards (test hook)")
    ta = time.perf_counter()
    if text_encoder is None:
        text_encoder, _ = _encoders(PipelineConfig.from_dict({**cfg_dict, "encoders": {**cfg_dict["encoders"],
                                                                                       "image": None}}))
    report = _assemble(corpus, out, staging, cfg, len(shards), layout, text_encoder, timings)
    timings["assemble"] = time.perf_counter() - ta
    report.seconds = time.perf_counter() - t0
    report.resumed_from = sum(len(shards[i]) for i in done)
    report.timings = {**timings, "shards": shard_stats}
    return report


def _run_actors(ray, corpus, shards, pending, shard_dir, cfg_dict, router_factory, workers, cpus, gpus):
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    items = [{"shard": i, "cases": json.dumps([dataclasses.asdict(c) for c in shards[i]])} for i in pending]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(ShardEncoder, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers),
                        num_cpus=cpus, num_gpus=gpus or None,
                        # the encoders size torch's thread pool from RAGMED_THREADS: the actor's share, not the node
                        runtime_env={"env_vars": {"RAGMED_THREADS": str(max(1, int(cpus)))}},
                        fn_constructor_kwargs={"cfg_dict": cfg_dict, "shard_dir": str(shard_dir),
                                               "root": str(corpus.root), "router_factory": router_factory,
                                               "threads": max(1, int(cpus))})
    stats = []
    for row in ds.iter_rows():
        stats.append({k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
    return sorted(stats, key=lambda r: r["shard"])


def _assemble(corpus: Corpus, out: Path, staging: Path, cfg, n_shards: int, layout: str, text_encoder, timings):
    """Shards → meta.sqlite + vector parts (ids as the local build assigns them) → FAISS → manifest → swap."""
    import pyarrow.parquet as pq

    from ragmed.index.build import DDL, BuildReport, _swap_in  # the local build's schema and atomic publication
    from ragmed.index.parts import write_part

    db = staging / "meta.sqlite"
    db.unlink(missing_ok=True)
    shutil.rmtree(staging / "vectors", ignore_errors=True)
    con = sqlite3.connect(db)
    con.executescript(DDL)
    con.executemany("INSERT INTO skipped(row, case_id, path, reason) VALUES (?,?,?,?)",
                    [(s.row, s.case_id, s.path, s.reason) for s in corpus.skipped])
    for shard in range(n_shards):
        t = pq.read_table(staging / "shards" / f"shard-{shard:06d}.parquet").to_pylist()
        by_img: dict[str, tuple[list, list]] = {}
        by_txt: dict[str, tuple[list, list]] = {}
        n_ok = 0
        for r in t:
            if r["kind"] == "case":
                n_ok += 1
                cur = con.execute("INSERT INTO cases(case_id, text, sections, metadata, split, domain) "
                                  "VALUES (?,?,?,?,?,?)", (r["case_id"], r["text"], r["sections"], r["metadata"],
                                                          r["split"], r["domain"]))
                if r["vec"] is not None:
                    by_txt.setdefault(r["domain"], ([], []))[0].append(cur.lastrowid)
                    by_txt[r["domain"]][1].append(r["vec"])
            elif r["kind"] == "image":
                cur = con.execute("INSERT INTO images(case_id, source, content_hash, modality, body_part, view, "
                                  "domain) VALUES (?,?,?,?,?,?,?)", (r["case_id"], r["source"], r["content_hash"],
                                                                     r["modality"], r["body_part"], r["view"],
                                                                     r["domain"]))
                by_img.setdefault(r["domain"], ([], []))[0].append(cur.lastrowid)
                by_img[r["domain"]][1].append(r["vec"])
            else:
                con.execute("INSERT INTO skipped(row, case_id, path, reason) VALUES (?,?,?,?)",
                            (r["row"], r["case_id"], None, r["reason"]))
        for kind, groups in (("image", by_img), ("text", by_txt)):
            for domain, (ids, vecs) in groups.items():
                write_part(staging / "vectors", domain, kind, shard, np.array(ids), np.asarray(vecs, np.float32))
        con.execute("INSERT INTO parts(number, n_cases) VALUES (?,?)", (shard, n_ok))
        con.commit()
    tf = time.perf_counter()
    manifest = _finalize(con, staging, cfg, corpus, layout, text_encoder)
    timings["finalize"] = time.perf_counter() - tf
    n_cases = con.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
    n_images = con.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    skipped = [dict(zip(("row", "case_id", "path", "reason"), r))
               for r in con.execute("SELECT row, case_id, path, reason FROM skipped ORDER BY row, rowid")]
    con.execute("DROP TABLE done")
    con.commit()
    con.close()
    shutil.rmtree(staging / "shards")
    (staging / "state.json").unlink(missing_ok=True)
    version = _swap_in(out, staging, manifest)
    return BuildReport(path=str(out), version=version, n_cases=n_cases, n_images=n_images, n_text=n_cases,
                       added=n_cases, resumed_from=0, skipped=skipped)


def _finalize(con, staging: Path, cfg, corpus: Corpus, layout: str, text_encoder) -> dict:
    import faiss

    from ragmed.index.build import _derived, index_manifest
    from ragmed.index.faiss_utils import build_faiss, resolve_factory
    from ragmed.index.ondisk import train_empty, write_ondisk
    from ragmed.index.parts import domains_in, list_parts, load_parts

    n_cases = con.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
    if n_cases == 0:
        raise IndexStoreError("nothing to index: every case was skipped", path=corpus.source,
                              remedy="see the skipped rows above")
    vec_root = staging / "vectors"
    dom_dir = staging / "domains"
    shutil.rmtree(dom_dir, ignore_errors=True)
    domains_meta: dict[str, Any] = {}
    for domain in domains_in(vec_root):
        domains_meta[domain] = {}
        for kind in ("image", "text"):
            parts = list_parts(vec_root, domain, kind)
            if not parts:
                continue
            (dom_dir / domain).mkdir(parents=True, exist_ok=True)
            if layout == "monolithic":
                ids, vecs = load_parts(vec_root, domain, kind)
                factory = resolve_factory(cfg.index.factory, len(ids), cfg.index.auto_flat_below)
                faiss.write_index(build_faiss(vecs, ids, factory), str(dom_dir / domain / f"{kind}.faiss"))
                n = len(ids)
            else:
                factory = cfg.index.factory
                sample = _sample_parts(parts, 50_000)
                trained = train_empty(factory, sample.shape[1], sample)
                n = write_ondisk(trained, _iter_parts(parts), dom_dir / domain / f"{kind}.faiss")
            domains_meta[domain][kind] = {"n": int(n), "factory": factory, "layout": layout}
    enc_ids = json.loads((staging / "shards" / "encoders.json").read_text())  # as the actors loaded them
    if enc_ids["text"]["id"] != text_encoder.id:
        raise IndexStoreError(f"the driver's text encoder {text_encoder.id!r} is not the actors' "
                              f"{enc_ids['text']['id']!r}")
    manifest = index_manifest(cfg, enc_ids, domains_meta, corpus, n_cases, build={"engine": "ray", "layout": layout})
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    con.commit()
    # BM25 and the one retrieval calibration (channel quantiles + evidence floors), as the local build writes them
    _derived(staging, text_encoder, None, enc_ids, progress=False)
    return manifest


def _iter_parts(parts: list[Path]):
    for p in parts:
        with np.load(p) as z:
            yield z["ids"], z["vectors"]


def _sample_parts(parts: list[Path], n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` vectors drawn evenly from the parts (one part in memory at a time)."""
    rng = np.random.default_rng(seed)
    sizes = []
    for p in parts:
        with np.load(p) as z:
            sizes.append(len(z["ids"]))
    total = sum(sizes)
    frac = min(1.0, n / max(total, 1))
    out = []
    for p, s in zip(parts, sizes):
        with np.load(p) as z:
            v = z["vectors"]
            take = rng.choice(s, size=max(1, int(round(s * frac))), replace=False) if frac < 1 else np.arange(s)
            out.append(v[np.sort(take)])
    return np.concatenate(out)
