"""Scale benchmarks for issue H: on-disk IVF-PQ at 1M–10M vectors, pgvector, the Ray build engine, and a projection.

    python eval/bench_scale.py ondisk --n 1000000            # on-disk IVF-PQ (+ memory-mapped exact re-ranking)
    python eval/bench_scale.py pgvector --n 100000            # PostgreSQL 16 + pgvector 0.8 HNSW on 127.0.0.1
    python eval/bench_scale.py pgcopy --n 100000              # bulk load: text COPY vs binary COPY, rows/s
    python eval/bench_scale.py ray --cases 240                # Ray engine vs local build: equality, 1 → 2 workers
    python eval/bench_scale.py project                        # 100M / 1B on paper from the measured per-vector costs

Vectors: draws from bench_search.py's generator, a mixture of probabilistic-PCA Gaussians fitted to real
all-MiniLM-L6-v2 embeddings of medical texts (``eval/.cache/search_minilm.npy`` when ``bench_search.py embed`` has
finished, else the parts of it written so far; the number of real vectors it was fitted on is recorded). The base set
is generated and added in blocks (memory: one block; checkpointed per block, a re-run resumes), each block's rows
written to the re-ranking store (float32, or faiss SQ8 codes with ``--rerank sq8``: 384 B/vector, how 10M fits the disk)
and merged into the queries' exact top-100 (ground truth over every vector, streamed); the search runs in a separate
process whose peak RSS is reported. Results: eval/results/bench_scale_*.json.

    python eval/bench_scale.py ondisk --n 10000000 --block 250000 --nlist 1024 --rerank sq8 --queries 300 \
        --nprobes 8,16 --refine 30,100 --threads 1 --warm-cache      # the first 10M run (~40 min at load 15)

Under a real memory limit that includes the page cache (root, cgroup-v1 memory controller): ``--mem-limit-gib G``
drops the system page cache, then runs each search process in its own memory cgroup of G GiB, which charges it its
anonymous memory and every page-cache page it faults in (mmap or pread), and records the cgroup's peak:

    python eval/bench_scale.py ondisk --n 10000000 --block 250000 --nlist 1024 --pq PQ48 --rerank sq8,sq6,sq4 \
        --queries 300 --threads 2 --skip-search                       # build (~36 min at load 9)
    python eval/bench_scale.py ondisk --n 10000000 --block 250000 --nlist 1024 --pq PQ48 --rerank sq8,sq6,sq4 \
        --queries 300 --nprobes 8 --refine 30,100 --warmup 500 --mem-limit-gib 3.72529 \
        --search sq6:mmap:warm,sq6:disk:warm,sq8:disk:warm --name bench_scale_ondisk_10M_cgroup4GB   # 4.0e9 bytes
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "eval"))
from ragmed.eval.bench import CACHE_DIR, peak_rss_mb, percentiles, write_result  # noqa: E402

D = 384
NQ = 500


def vm_hwm_mb() -> float:
    """Peak RSS of this process since its exec (VmHWM; ru_maxrss would carry the parent's peak over fork + exec),
    counting the pages of memory-mapped files it touched."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return peak_rss_mb()


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------------------------------- the generator
def mixture() -> tuple[dict, int]:
    """The PPCA mixture fitted to the real MiniLM embeddings available (cached)."""
    import bench_search as bs

    cache = CACHE_DIR / "scale_mixture.npz"
    if cache.exists():
        z = np.load(cache)
        m = {k: z[k] for k in ("means", "bases", "sds", "noise", "weights")}
        m["k"], m["rank"] = len(m["means"]), m["bases"].shape[1]
        return m, int(z["n_real"])
    if bs.EMB.exists():
        X = np.load(bs.EMB)
    else:
        parts = sorted(CACHE_DIR.glob("search_embed_part*.npy"))
        if not parts:
            sys.exit("no MiniLM embeddings yet: run `python eval/bench_search.py embed` (resumable) first")
        X = np.concatenate([np.load(p) for p in parts])
    k = 1024 if len(X) >= 50_000 else 256
    m = bs.fit_mixture(X, k=k)
    np.savez(cache, n_real=len(X), **{k_: m[k_] for k_ in ("means", "bases", "sds", "noise", "weights")})
    return m, len(X)


def sample(m: dict, n: int, seed: int) -> np.ndarray:
    """``n`` draws from the mixture, deterministic in ``seed``: the random numbers of bench_search.sample_mixture in
    the same order, the projection done per component (a matrix product per component instead of bench_search's
    gathered einsum, which holds step × rank × dim floats: 1.2 GB per 50k draws)."""
    rng = np.random.default_rng(seed)
    comp = rng.choice(m["k"], size=n, p=m["weights"])
    out = np.empty((n, m["means"].shape[1]), dtype=np.float32)
    step = 50_000
    for i in range(0, n, step):
        c = comp[i:i + step]
        z = rng.standard_normal((len(c), m["rank"]), dtype=np.float32) * m["sds"][c]
        x = m["means"][c].astype(np.float32)
        order = np.argsort(c, kind="stable")
        cs = c[order]
        cuts = np.flatnonzero(np.diff(cs)) + 1
        for grp in np.split(order, cuts):
            if len(grp):
                x[grp] += z[grp] @ m["bases"][c[grp[0]]]
        x += rng.standard_normal(x.shape, dtype=np.float32) * m["noise"][c][:, None]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[i:i + step] = x
    return out


# --------------------------------------------------------------------------------------------------- on-disk IVF-PQ
def cmd_ondisk(args) -> None:
    """Checkpointed build: a trained empty index, then per block (generated from its own seed, never the whole set in
    RAM) an index block file, the block's re-ranking rows and the running exact top-100 of the queries; a re-run
    resumes after the last finished block. Then merge_ondisk, then the search in a fresh process."""
    import faiss

    from ragmed.index.ondisk import merge_blocks, train_empty, write_block

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    work = Path(args.work) / f"ondisk-{args.n}"
    if args.rebuild:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    m, n_real = mixture()
    nlist = args.nlist or (1024 if args.n <= 2_000_000 else 4096)
    factory = f"IVF{nlist},{args.pq}"
    stores = _stores(args.rerank)
    idx_path, blk_dir = work / "index.faiss", work / "blocks"
    ck_path = work / "checkpoint.json"
    t_all = time.perf_counter()
    if not idx_path.exists():
        ck = json.loads(ck_path.read_text()) if ck_path.exists() else None
        if ck is None:  # fresh: train, write the trained empty index, the queries and an empty checkpoint
            blk_dir.mkdir(exist_ok=True)
            t = time.perf_counter()
            train = sample(m, min(args.n, max(40 * nlist, 50_000)), seed=3)
            trained = train_empty(factory, D, train)
            faiss.write_index(trained, str(work / "trained.faiss"))
            for kind in stores:
                if kind != "float32":
                    sq = faiss.IndexScalarQuantizer(D, SQ_TYPES[kind], faiss.METRIC_INNER_PRODUCT)
                    sq.train(train)
                    faiss.write_index(sq, str(work / f"{kind}.faiss"))
            ck = {"factory": factory, "rerank": args.rerank, "block": args.block, "blocks_done": 0,
                  "build": {"train_s": time.perf_counter() - t, "train_n": len(train), "generate_s": 0.0,
                            "ground_truth_s": 0.0, "add_s": 0.0, "sessions": 0}}
            del train
            np.save(work / "queries.npy", sample(m, args.queries, seed=2))
            np.save(work / "gt_D.npy", np.full((args.queries, 100), -np.inf, dtype=np.float32))
            np.save(work / "gt_I.npy", np.full((args.queries, 100), -1, dtype=np.int64))
            for kind in stores:
                if kind == "float32":
                    np.lib.format.open_memmap(work / STORE_FILE[kind], mode="w+", dtype=np.float32,
                                              shape=(args.n, D)).flush()
                else:
                    with open(work / STORE_FILE[kind], "wb") as f:
                        f.truncate(args.n * faiss.read_index(str(work / f"{kind}.faiss")).sa_code_size())
            ck_path.write_text(json.dumps(ck))
        if ck["block"] != args.block or ck["factory"] != factory or ck["rerank"] != args.rerank:
            sys.exit(f"checkpoint in {work} was made with other settings: {ck}; use --rebuild")
        build = ck["build"]
        build["sessions"] += 1
        trained = faiss.read_index(str(work / "trained.faiss"))
        sqs = {k: (None if k == "float32" else faiss.read_index(str(work / f"{k}.faiss"))) for k in stores}
        q = np.load(work / "queries.npy")
        gt_D, gt_I = np.load(work / "gt_D.npy"), np.load(work / "gt_I.npy")
        starts = list(range(0, args.n, args.block))
        if args.stop_after_blocks:  # a smaller index from the first blocks: their ground truth is exact over them
            starts = starts[:args.stop_after_blocks]
            build["stopped_after_blocks"] = len(starts)
        fds = {k: os.open(work / STORE_FILE[k], os.O_WRONLY) for k in stores}
        layout = {k: _store_layout(work, k, sqs[k]) for k in stores}
        for b in range(ck["blocks_done"], len(starts)):
            a = starts[b]
            z = min(args.n, a + args.block)
            t0 = time.perf_counter()
            x = sample(m, z - a, seed=1000 + b)
            build["generate_s"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            Dq, Iq = faiss.knn(q, x, 100, metric=faiss.METRIC_INNER_PRODUCT)  # exact ground truth, streamed
            allD, allI = np.concatenate([gt_D, Dq], 1), np.concatenate([gt_I, Iq + a], 1)
            o = np.argsort(-allD, axis=1, kind="stable")[:, :100]
            gt_D, gt_I = np.take_along_axis(allD, o, 1), np.take_along_axis(allI, o, 1)
            build["ground_truth_s"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            write_block(trained, np.arange(a, z, dtype=np.int64), x, blk_dir / f"block-{b:06d}.faiss")
            for k, fd in fds.items():
                rows = x if sqs[k] is None else sqs[k].sa_encode(x)
                header, row_bytes = layout[k]
                os.pwrite(fd, np.ascontiguousarray(rows).tobytes(), header + a * row_bytes)
                os.fsync(fd)
                del rows
            build["add_s"] += time.perf_counter() - t0
            del x
            np.save(work / "gt_D.tmp.npy", gt_D)
            np.save(work / "gt_I.tmp.npy", gt_I)
            os.replace(work / "gt_D.tmp.npy", work / "gt_D.npy")
            os.replace(work / "gt_I.tmp.npy", work / "gt_I.npy")
            ck["blocks_done"] = b + 1
            build["builder_peak_rss_mb"] = max(build.get("builder_peak_rss_mb", 0), vm_hwm_mb())
            (work / "checkpoint.tmp").write_text(json.dumps(ck))
            os.replace(work / "checkpoint.tmp", ck_path)
            print(f"  block {b}: {z}/{args.n} load {load_avg()} rss {vm_hwm_mb():.0f} MB", file=sys.stderr,
                  flush=True)
        for fd in fds.values():
            os.close(fd)
        t0 = time.perf_counter()
        n_done = min(args.n, len(starts) * args.block)
        merge_blocks(trained, [blk_dir / f"block-{b:06d}.faiss" for b in range(len(starts))], idx_path)
        if n_done < args.n:  # cut the re-ranking stores to the rows written
            for k in stores:
                header, row_bytes = layout[k]
                os.truncate(work / STORE_FILE[k], header + n_done * row_bytes)
            if gt_I.max() >= n_done:
                sys.exit(f"ground truth holds ids beyond the {n_done} vectors of the finished blocks")
        build["n"] = n_done
        build["merge_s"] = time.perf_counter() - t0
        build["builder_peak_rss_mb"] = max(build.get("builder_peak_rss_mb", 0), vm_hwm_mb())
        np.save(work / "gt.npy", gt_I)
        shutil.rmtree(blk_dir, ignore_errors=True)
        (work / "build.json").write_text(json.dumps(build))
    build = json.loads((work / "build.json").read_text())
    n = build.get("n", args.n)
    if args.skip_search:
        return
    # each search configuration in a fresh process: its peak RSS is that configuration's serving footprint
    specs = [x.strip() for x in (args.search or f"{stores[0]}:disk:{'warm' if args.warm_cache else 'as-is'}")
             .split(",") if x.strip()]
    results = []
    for spec in specs:
        store, place, cache, *more = spec.split(":")
        if store not in stores or place not in ("ram", "disk", "mmap") or cache not in CACHE_MODES \
                or more not in ([], ["ivf-ram"]):
            sys.exit(f"--search {spec!r}: want STORE:ram|disk|mmap:{'|'.join(CACHE_MODES)}[:ivf-ram] with STORE one of "
                     f"{stores}")
        cmd = ([sys.executable, __file__, "_search", str(work), "--nprobes", args.nprobes,
                "--refine", args.refine, "--rerank", store, "--cache", cache, "--warmup", str(args.warmup)]
               + (["--store-in-ram"] if place == "ram" else []) + (["--ivf-in-ram"] if more else [])
               + (["--store-mmap"] if place == "mmap" else [])
               + (["--skip-unrefined", "--caches-dropped"] if args.mem_limit_gib else []))
        if args.mem_limit_gib:
            r, cg = run_in_memory_cgroup(cmd, int(args.mem_limit_gib * 2**30))
        else:
            r, cg = subprocess.run(cmd, capture_output=True, text=True), None
        if r.returncode != 0:
            sys.exit(r.stderr[-3000:])
        results.append({"spec": spec, **json.loads(r.stdout.strip().splitlines()[-1])})
        if cg:
            results[-1]["cgroup"] = cg
            print(f"{spec}: cgroup peak {cg['peak_usage_mib']:.0f} MiB of {cg['limit_mib']:.0f} MiB "
                  f"(limit hit {cg['failcnt']} times)", file=sys.stderr, flush=True)
        print(f"{spec}: " + "; ".join(f"nprobe {x['nprobe']} refine {x['refine_candidates']}: R@10 "
                                      f"{x['recall@10']:.3f} p50 {x['p50_ms']:.1f} ms" for x in results[-1]["sweep"])
              + f"; peak RSS {results[-1]['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    disk = {p.name: p.stat().st_size for p in work.iterdir()
            if p.suffix in (".faiss", ".ivfdata", ".npy") or p.name in STORE_FILE.values()}
    payload = {"n": n, "n_planned": args.n, "dim": D, "factory": factory, "nlist": nlist,
               "layout": "on-disk IVF lists (merge_ondisk, memory-mapped) + re-ranking store(s) "
               + ", ".join(stores) + " (faiss ScalarQuantizer codes; float32 raw rows), read with pread per query "
               "or held in RAM as each search says",
               "rerank_stores": stores, "generator_fitted_on_real": n_real, "queries": args.queries,
               "block": args.block,
               "threads": args.threads, "build": build, "disk_bytes": disk,
               "disk_bytes_per_vector": {k: v / n for k, v in disk.items()
                                         if k not in ("gt.npy", "gt_D.npy", "gt_I.npy", "queries.npy")},
               "ground_truth": "exact inner-product top-100 of the queries over all n float32 vectors, merged block "
               "by block (faiss.knn per block)", "search": results[0], "searches": results,
               "load_avg_at_end": load_avg()}
    if args.mem_limit_gib:
        payload["memory_limit"] = (f"each search process ran in its own cgroup-v1 memory cgroup limited to "
                                   f"{args.mem_limit_gib} GiB ({int(args.mem_limit_gib * 2**30)} bytes), which "
                                   "charges its anonymous memory and every page-cache page it faults in (mmap of the "
                                   "IVF lists, pread of the re-ranking store); the system page cache was dropped "
                                   "(sync; drop_caches=3) before it started, so no page that another process had "
                                   "cached was served to it uncharged")
    print(json.dumps(payload, indent=2))
    write_result(args.name or f"bench_scale_ondisk_{_size(n)}", payload)
    if args.cleanup:
        shutil.rmtree(work, ignore_errors=True)


CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def run_in_memory_cgroup(cmd: list[str], limit_bytes: int) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ``cmd`` in a fresh cgroup-v1 memory cgroup limited to ``limit_bytes``, after dropping the system page
    cache, so that everything the process touches (its anonymous memory and the page cache of the files it maps or
    reads) is charged to it and held under the limit; the kernel reclaims the cgroup's page cache when it reaches the
    limit. Returns the process and the cgroup's peak usage and final ``memory.stat``. Needs root and a writable
    cgroup-v1 memory controller: exits with a message saying so where there is none."""
    cg = CGROUP_ROOT / f"ragmed-bench-{os.getpid()}-{time.monotonic_ns()}"
    try:
        cg.mkdir()
    except OSError as e:
        sys.exit(f"--mem-limit-gib: skipped, no writable cgroup-v1 memory controller at {CGROUP_ROOT} ({e}); "
                 "run as root on a machine with one (cgroup v2 hosts: use systemd-run -p MemoryMax=... instead)")
    try:
        (cg / "memory.limit_in_bytes").write_text(str(limit_bytes))
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        # the child joins the cgroup before exec: everything from the interpreter's start on is charged
        r = subprocess.run(["sh", "-c", f'echo $$ > {cg / "cgroup.procs"} && exec "$@"', "sh", *cmd],
                           capture_output=True, text=True)
        stat = {ln.split()[0]: int(ln.split()[1]) for ln in (cg / "memory.stat").read_text().splitlines()}
        mib = 1 / 2**20
        out = {"limit_mib": limit_bytes * mib,
               "peak_usage_mib": int((cg / "memory.max_usage_in_bytes").read_text()) * mib,
               "peak_usage_bytes": int((cg / "memory.max_usage_in_bytes").read_text()),
               "failcnt": int((cg / "memory.failcnt").read_text()),
               "at_exit_mib": {k: stat[k] * mib for k in ("cache", "rss", "mapped_file", "inactive_file",
                                                          "active_file") if k in stat},
               "charged": "anonymous memory + page cache (mmap and pread) of the process, peak = "
                          "memory.max_usage_in_bytes; failcnt = times the limit was reached (page cache reclaimed)"}
    finally:
        try:
            (cg / "memory.force_empty").write_text("0")
        except OSError:
            pass
        cg.rmdir()
    return r, out


CACHE_MODES = ("warm", "cold", "cold-query", "as-is")
SQ_TYPES = {}  # filled lazily (faiss imported lazily): re-ranking store kind -> faiss ScalarQuantizer type
STORE_FILE = {"float32": "vectors.npy", "sq8": "vectors.sq8", "sq6": "vectors.sq6", "sq4": "vectors.sq4"}


def _stores(spec: str) -> list[str]:
    import faiss

    SQ_TYPES.update(sq8=faiss.ScalarQuantizer.QT_8bit, sq6=faiss.ScalarQuantizer.QT_6bit,
                    sq4=faiss.ScalarQuantizer.QT_4bit)
    kinds = [k.strip() for k in spec.split(",") if k.strip()]
    bad = [k for k in kinds if k not in STORE_FILE]
    if bad or not kinds:
        sys.exit(f"--rerank: unknown store(s) {bad}; choose from {sorted(STORE_FILE)}")
    return kinds


def _store_layout(work: Path, kind: str, sq) -> tuple[int, int]:
    """(header bytes, bytes per row) of a re-ranking store file."""
    if kind == "float32":
        return int(np.load(work / STORE_FILE[kind], mmap_mode="r").offset), D * 4
    return 0, int(sq.sa_code_size())


def _size(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


class PageCache:
    """Drop files from the OS page cache without root and without touching other processes' files:
    ``madvise(MADV_DONTNEED)`` on this process's own mapping of the IVF lists (so the pages are no longer mapped
    here), then ``posix_fadvise(POSIX_FADV_DONTNEED)`` on each file (the kernel drops its clean, unmapped pages).
    ``resident()`` checks the result with ``mincore`` on a fresh mapping: the fraction of each file's pages still in
    the page cache. A virtual machine's host may still cache the disk below this: "cold" means the guest's cache."""

    MADV_DONTNEED = 4

    def __init__(self, paths: list[Path], mapping: tuple[int, int] | None):
        import ctypes

        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.libc.mmap.restype = ctypes.c_void_p
        self.libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                   ctypes.c_long]
        self.libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        self.libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.paths, self.mapping = paths, mapping
        self.fds = [os.open(p, os.O_RDONLY) for p in paths]

    def drop(self) -> None:
        if self.mapping:
            if self.libc.madvise(self.mapping[0], self.mapping[1], self.MADV_DONTNEED) != 0:
                raise OSError("madvise(MADV_DONTNEED) failed")
        for fd in self.fds:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def resident(self) -> dict:
        import ctypes

        page = os.sysconf("SC_PAGE_SIZE")
        out = {}
        for path, fd in zip(self.paths, self.fds):
            size = os.fstat(fd).st_size
            addr = self.libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
            pages = (size + page - 1) // page
            vec = (ctypes.c_ubyte * pages)()
            self.libc.mincore(addr, size, vec)
            self.libc.munmap(addr, size)
            out[path.name] = round(float((np.frombuffer(vec, dtype=np.uint8) & 1).mean()), 4)
        return out


def cmd_search(args) -> None:
    """One re-ranking store, one page-cache mode, a sweep over nprobe × refine; one query at a time on one thread.

    Page-cache modes: ``warm`` (the IVF lists, and the store when it stays on disk, read once sequentially first),
    ``cold`` (dropped before each sweep row: the row's queries fill the cache as a freshly started server's would),
    ``cold-query`` (dropped before every query, outside its timing: every query reads its lists from the disk).
    Re-ranking store: read with pread per query (on disk), or held in this process's memory (``--store-in-ram``,
    counted in its RSS)."""
    import faiss

    _stores(args.rerank)
    work = Path(args.work)
    t = time.perf_counter()
    if args.ivf_in_ram:  # the on-disk lists read into this process's memory at open (ArrayInvertedLists)
        from ragmed.index.ondisk import ivf_in_memory

        index = ivf_in_memory(work / "index.faiss")
    else:
        index = faiss.read_index(str(work / "index.faiss"), faiss.IO_FLAG_ONDISK_SAME_DIR)
    open_s = time.perf_counter() - t
    ivf = faiss.extract_index_ivf(index)
    od = faiss.downcast_InvertedLists(ivf.invlists)
    mapping = None
    if isinstance(od, faiss.OnDiskInvertedLists) and od.totsize:
        mapping = (int(faiss.rev_swig_ptr(od.ptr, 1).ctypes.data), int(od.totsize))
    kind = args.rerank
    sq = None if kind == "float32" else faiss.read_index(str(work / f"{kind}.faiss"))
    store_path = work / STORE_FILE[kind]
    offset, row_bytes = _store_layout(work, kind, sq)
    t = time.perf_counter()
    in_ram = None
    if args.store_in_ram:  # the whole store in this process's memory (counted in its RSS)
        n_rows = int(index.ntotal)
        in_ram = np.fromfile(store_path, dtype=np.uint8, count=n_rows * row_bytes,
                             offset=offset).reshape(n_rows, row_bytes)
    load_store_s = time.perf_counter() - t
    fd = os.open(store_path, os.O_RDONLY)
    mapped = None
    if args.store_mmap and in_ram is None:  # page cache pages mapped into this process (charged like pread's)
        mapped = np.memmap(store_path, dtype=np.uint8, mode="r", offset=offset,
                           shape=(int(index.ntotal), row_bytes))

    def rows_of(ids: np.ndarray) -> np.ndarray:
        """The re-ranking rows of ``ids`` (sorted): from memory, or read with pread (page cache or disk, never
        mapped into this process)."""
        if in_ram is not None:
            raw = in_ram[ids]
        elif mapped is not None:
            raw = mapped[ids]
        else:
            raw = np.frombuffer(b"".join(os.pread(fd, row_bytes, offset + int(i) * row_bytes) for i in ids),
                                dtype=np.uint8).reshape(len(ids), row_bytes)
        return raw.view(np.float32) if sq is None else sq.sa_decode(raw)

    files = ([] if args.ivf_in_ram else [work / "index.ivfdata"]) + ([] if in_ram is not None else [store_path])
    cache = PageCache(files, mapping)
    warm_s = None
    if args.cache == "warm":  # a server's steady state: its files in the OS page cache (outside this process's RSS)
        t = time.perf_counter()
        for path in files:
            with open(path, "rb", buffering=0) as f:
                buf = bytearray(64 << 20)
                while f.readinto(buf):
                    pass
            del buf
        warm_s = time.perf_counter() - t
    q = np.load(work / "queries.npy")
    gt = np.load(work / "gt.npy")
    faiss.omp_set_num_threads(1)  # one query at a time, one core: the per-query latency a server sees

    def one(qv: np.ndarray, k0: int, refine: int) -> tuple[np.ndarray, float]:
        """One query: IVF-PQ top-k0, then (refine) re-ranking of the candidates against the store."""
        t = time.perf_counter()
        _, I = index.search(qv[None], k0)
        t_ivf = time.perf_counter() - t
        cand = I[0][I[0] >= 0]
        if refine:  # re-ranking of the candidates against the re-ranking store
            order = np.sort(cand)
            s = rows_of(order) @ qv
            cand = order[np.argsort(-s)[:10]]
        return cand[:10], t_ivf

    nprobes = [int(x) for x in args.nprobes.split(",")]
    refines = ([] if args.skip_unrefined else [0]) + [int(r) for r in args.refine.split(",")]
    warmup = None
    if args.warmup:  # other draws of the generator than the measured queries: they touch other re-ranking rows
        ivf.nprobe, rf = max(nprobes), max(refines)
        wq = sample(mixture()[0], args.warmup, seed=4)
        wl = []
        for i in range(len(wq)):
            t = time.perf_counter()
            one(wq[i], 10 * rf if rf else 10, rf)
            wl.append(time.perf_counter() - t)
        wl = np.array(wl) * 1e3
        warmup = {"queries": len(wq), "nprobe": ivf.nprobe, "refine_candidates": 10 * rf,
                  "first_10_ms": [round(float(x), 2) for x in wl[:10]],
                  "first_50": {"p50_ms": float(np.median(wl[:50])), "p95_ms": float(np.percentile(wl[:50], 95)),
                               "mean_ms": float(wl[:50].mean())},
                  "all": {"p50_ms": float(np.median(wl)), "p95_ms": float(np.percentile(wl, 95)),
                          "mean_ms": float(wl.mean())},
                  "last_100": {"p50_ms": float(np.median(wl[-100:])), "p95_ms": float(np.percentile(wl[-100:], 95))},
                  "peak_rss_mb_after": vm_hwm_mb()}
        print({"warmup": warmup}, file=sys.stderr, flush=True)
    rows, residency = [], []
    for nprobe in nprobes:
        ivf.nprobe = nprobe
        for refine in refines:
            k0 = 10 * refine if refine else 10
            if args.cache == "cold":
                cache.drop()
                residency.append(cache.resident())
            lat, lat_ivf, found = [], [], []
            for i in range(len(q)):
                if args.cache == "cold-query":
                    cache.drop()
                    if i == 0:
                        residency.append(cache.resident())
                t = time.perf_counter()
                cand, t_ivf = one(q[i], k0, refine)
                lat.append(time.perf_counter() - t)
                lat_ivf.append(t_ivf)
                found.append(cand)
            recall = float(np.mean([len(set(f.tolist()) & set(g[:10].tolist())) / 10 for f, g in zip(found, gt)]))
            rows.append({"nprobe": nprobe, "refine_candidates": k0 if refine else 0, "recall@10": recall,
                         **percentiles(lat), "ivf_search_p50_ms": float(np.median(lat_ivf) * 1e3)})
            print(rows[-1], file=sys.stderr, flush=True)
    status = {ln.split(":")[0]: int(ln.split()[1]) / 1024 for ln in Path("/proc/self/status").read_text().splitlines()
              if ln.startswith(("VmRSS", "RssAnon", "RssFile"))}
    page_cache = {"warm": f"warmed: {', '.join(p.name for p in files)} read once sequentially ({warm_s or 0:.0f} s) "
                          "before the timed queries",
                  "cold": "dropped (madvise + posix_fadvise DONTNEED) before each sweep row: the row's queries "
                          "start from an empty cache and fill it",
                  "cold-query": "dropped (madvise + posix_fadvise DONTNEED) before every query, outside its "
                                "timing: each query reads what it needs of "
                                + (", ".join(p.name for p in files) or "nothing (all in RAM)") + " from disk",
                  "as-is": "as the build left it"}[args.cache]
    if args.caches_dropped:
        page_cache = ("system page cache dropped (drop_caches) before this process started; then "
                      + ("files " + page_cache if args.cache == "warm" else page_cache if args.cache != "as-is"
                         else "nothing pre-read"))
    print(json.dumps({"open_s": open_s, "cache": args.cache, "page_cache": page_cache,
                      "resident_after_drop": residency[:3], "store": kind, "store_in_ram": in_ram is not None,
                      "ivf_lists_in_ram": bool(args.ivf_in_ram),
                      "store_bytes_per_vector": row_bytes, "load_store_s": load_store_s,
                      "peak_rss_mb": vm_hwm_mb(), "rss_at_end_mb": status, "warmup": warmup, "sweep": rows,
                      "threads": 1, "load_avg_at_end": load_avg(),
                      "reranking": ("rows gathered from the store in memory" if in_ram is not None else
                                    "rows gathered from a read-only memory map of " + STORE_FILE[kind]
                                    if mapped is not None else
                                    "pread of the candidate rows per query from " + STORE_FILE[kind])
                      + ("" if sq is None else f", {kind.upper()} codes decoded by faiss") + ", inner product "
                      "with the query, top 10 kept"}))


# --------------------------------------------------------------------------------------------------- pgvector
def cmd_pgvector(args) -> None:
    import faiss
    import psycopg

    from ragmed.index.pg_local import LocalPostgres
    from ragmed.index.pgvector import copy_rows, register_binary_vectors

    m, n_real = mixture()
    base = sample(m, args.n, seed=1000)
    q = sample(m, NQ, seed=2)
    _, gt = faiss.knn(q, base, 10, metric=faiss.METRIC_INNER_PRODUCT)
    out: dict = {"n": args.n, "dim": D, "generator_fitted_on_real": n_real, "queries": NQ,
                 "hnsw": {"m": 16, "ef_construction": 64}}
    with LocalPostgres(args.work) as pg, psycopg.connect(pg.dsn, autocommit=True) as con:
        con.execute("CREATE TABLE items (id BIGINT PRIMARY KEY, vec vector(384))")
        t = time.perf_counter()
        register_binary_vectors(con)
        with con.cursor() as cur:
            copy_rows(cur, "items (id, vec)", ["int8", "vector"], ((i, base[i]) for i in range(args.n)))
        out["load_s"] = time.perf_counter() - t
        out["load"] = "binary COPY (ragmed.index.pgvector.copy_rows)"
        con.execute(f"SET maintenance_work_mem = '{'3GB' if args.n > 200_000 else '2GB'}'")
        t = time.perf_counter()
        con.execute("CREATE INDEX ON items USING hnsw (vec vector_ip_ops) WITH (m = 16, ef_construction = 64)")
        out["hnsw_build_s"] = time.perf_counter() - t
        out["table_bytes"] = con.execute("SELECT pg_total_relation_size('items')").fetchone()[0]
        out["index_bytes"] = con.execute("SELECT pg_relation_size(indexrelid) FROM pg_index WHERE "
                                         "indrelid='items'::regclass AND NOT indisprimary").fetchone()[0]
        rows = []
        for ef in (40, 100, 200):
            con.execute(f"SET hnsw.ef_search = {ef}")
            lat, found = [], []
            for i in range(NQ):
                v = "[" + ",".join(map(repr, q[i].tolist())) + "]"
                t = time.perf_counter()
                r = con.execute("SELECT id FROM items ORDER BY vec <#> %s::vector LIMIT 10", (v,)).fetchall()
                lat.append(time.perf_counter() - t)
                found.append([x[0] for x in r])
            rec = float(np.mean([len(set(f) & set(g.tolist())) / 10 for f, g in zip(found, gt)]))
            rows.append({"ef_search": ef, "recall@10": rec, **percentiles(lat)})
        out["sweep"] = rows
    out["load_avg_at_end"] = load_avg()
    print(json.dumps(out, indent=2))
    write_result(f"bench_scale_pgvector_{_size(args.n)}", out)


def cmd_pgcopy(args) -> None:
    """Bulk-load rate of (id, vector(384)) rows into PostgreSQL + pgvector: text COPY (decimal literals, the export's
    former path) against binary COPY (``copy_rows``, the export's path now), same rows, same server, alternated."""
    import psycopg

    from ragmed.index.pg_local import LocalPostgres
    from ragmed.index.pgvector import copy_rows, register_binary_vectors

    m, n_real = mixture()
    base = sample(m, args.n, seed=1000)
    out: dict = {"n": args.n, "dim": D, "generator_fitted_on_real": n_real, "load_avg_start": load_avg(), "runs": []}
    with LocalPostgres(args.work) as pg, psycopg.connect(pg.dsn, autocommit=True) as con:
        register_binary_vectors(con)
        for rep in range(args.repeats):
            for fmt in ("text", "binary"):
                con.execute("DROP TABLE IF EXISTS items")
                con.execute("CREATE TABLE items (id BIGINT PRIMARY KEY, vec vector(384))")
                t = time.perf_counter()
                with con.cursor() as cur:
                    if fmt == "text":
                        with cur.copy("COPY items (id, vec) FROM STDIN") as cp:
                            for i in range(args.n):
                                cp.write_row((i, "[" + ",".join(map(repr, base[i].tolist())) + "]"))
                    else:
                        copy_rows(cur, "items (id, vec)", ["int8", "vector"], ((i, base[i]) for i in range(args.n)))
                s = time.perf_counter() - t
                back = con.execute("SELECT vec FROM items WHERE id = %s", (args.n // 2,)).fetchone()[0]
                back = back.to_numpy() if hasattr(back, "to_numpy") else np.asarray(back, dtype=np.float32)
                exact = bool(np.array_equal(back, base[args.n // 2]))
                n = con.execute("SELECT count(*) FROM items").fetchone()[0]
                out["runs"].append({"format": fmt, "repeat": rep, "seconds": s, "rows_per_s": args.n / s,
                                    "rows": n, "vector_round_trip_exact": exact, "load_avg": load_avg()})
                print(out["runs"][-1], file=sys.stderr, flush=True)
    best = {f: max(r["rows_per_s"] for r in out["runs"] if r["format"] == f) for f in ("text", "binary")}
    out["best_rows_per_s"] = best
    out["speedup_binary_over_text"] = best["binary"] / best["text"]
    out["load_avg_end"] = load_avg()
    print(json.dumps(out, indent=2))
    write_result(f"bench_scale_pgcopy_{_size(args.n)}", out)


# --------------------------------------------------------------------------------------------------- Ray engine
def _mri_corpus(root: Path, n: int) -> Path:
    """``n`` real brain-MRI JPEGs (shared data) with short templated reports from their labels."""
    import csv

    data = Path(os.environ.get("RAGMED_DATA", REPO.parent / "shared" / "data")) / "images" / "brain-tumor-mri"
    if not data.exists():
        sys.exit(f"shared data not found at {data}")
    text = {"glioma": "Infiltrative intra-axial mass with surrounding oedema, suspicious for glioma.",
            "meningioma": "Extra-axial dural-based enhancing mass, consistent with meningioma.",
            "pituitary": "Sellar mass expanding the pituitary fossa, consistent with pituitary adenoma.",
            "notumor": "No intracranial mass. Normal brain MRI."}
    with open(data / "labels.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "Training"]
    rng = np.random.default_rng(0)
    pick = sorted(rng.choice(len(rows), n, replace=False))
    root.mkdir(parents=True, exist_ok=True)
    out = root / "manifest.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "report", "label"])
        for j, i in enumerate(pick):
            r = rows[i]
            w.writerow([f"mri{j}", str(data / r["file"]), f"{text.get(r['label'], '')} Study {j}.", r["label"]])
    return out


def _steady_window(stats: list[dict]) -> dict:
    """Throughput once every actor is warm: cases of the shards that ended after the last actor's first shard,
    over the wall time from that moment to the last shard's end (actor start-up and model loading excluded)."""
    first = {}
    for s in sorted(stats, key=lambda s: s["ended"]):
        first.setdefault(s["pid"], s["ended"])
    t0 = max(first.values())
    after = [s for s in stats if s["ended"] > t0]
    span = max(s["ended"] for s in stats) - t0
    if not after or span <= 0:
        return {"steady_window": None}
    n = sum(s["n_cases"] for s in after)
    return {"steady_window": {"cases": n, "seconds": span, "cases_per_s": n / span, "shards": len(after)}}


def cmd_ray(args) -> None:
    import ray

    from ragmed.config import PipelineConfig
    from ragmed.corpus import read_corpus
    from ragmed.encoders import create_encoder
    from ragmed.index import build_index, open_index
    from ragmed.index.ray_build import ray_build_index
    from ragmed.io import load_image

    work = Path(tempfile.mkdtemp(prefix="scale-ray-", dir=args.work))
    corpus = read_corpus(_mri_corpus(work / "c", args.cases))
    cfg = PipelineConfig.from_dict({"encoders": {"text": {"name": "minilm"}, "image": {"name": args.image_encoder}},
                                    "index": {"factory": "Flat", "batch_size": 32, "fit_image_encoder": False}})
    text = create_encoder("minilm")
    out: dict = {"cases": args.cases, "image_encoder": args.image_encoder, "load_avg_start": load_avg(), "runs": {}}
    t = time.perf_counter()
    build_index(corpus, work / "local", cfg, text_encoder=text, progress=False)
    out["local_build_s"] = time.perf_counter() - t
    if args.address:  # an existing cluster, e.g. two nodes started with `ray start` (see --help)
        ray.init(address=args.address, log_to_driver=False)
        out["cluster"] = {"address": "given", "nodes": len([n for n in ray.nodes() if n["Alive"]]),
                          "cpus": ray.cluster_resources().get("CPU")}
    else:
        tmp = tempfile.mkdtemp(prefix="rayb")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tmp)
    order = [int(w) for w in args.workers.split(",")]
    out["repeats"] = []
    # repeats alternate the order (1,2 / 2,1 / ...): a load trend favours neither
    plan = [(r, w) for r in range(args.repeats) for w in (order if r % 2 == 0 else order[::-1])]
    try:
        for r, workers in plan:
            t = time.perf_counter()
            rep = ray_build_index(corpus, work / f"ray{workers}-r{r}", cfg, workers=workers,
                                  shard_size=args.shard_size, text_encoder=text, progress=False)
            stats = rep.timings["shards"]
            enc_s = rep.timings["encode"]
            out["runs"][workers] = {"total_s": time.perf_counter() - t, "encode_phase_s": enc_s,
                                    "assemble_s": rep.timings["assemble"],
                                    "cases_per_s": args.cases / enc_s,
                                    "per_worker_cases_per_s": args.cases / enc_s / workers,
                                    "shard_seconds_mean": float(np.mean([s["seconds"] for s in stats])),
                                    "shard_cpu_seconds_mean": float(np.mean([s["cpu_seconds"] for s in stats])),
                                    "steady_cases_per_s": workers * args.shard_size
                                    / float(np.mean([s["seconds"] for s in stats])),
                                    "actors": len({s["pid"] for s in stats}), "load_avg": load_avg(),
                                    **_steady_window(stats)}
            out["repeats"].append({"repeat": r, "workers": workers, **out["runs"][workers]})
            print(r, workers, out["runs"][workers], file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
        if not args.address:
            shutil.rmtree(tmp, ignore_errors=True)
    a = open_index(work / "local")
    img = create_encoder(args.image_encoder)
    paths = [c.images[0] for c in corpus.cases[: args.queries]]
    iq = img.encode_images([load_image(p) for p in paths])
    tq = text.encode_texts([c.text.split(" Study")[0] + " Follow-up." for c in corpus.cases[: args.queries]])
    same = {}
    for run in out["repeats"]:
        b = open_index(work / f"ray{run['workers']}-r{run['repeat']}")
        eq = []
        for kind, q in (("image", iq), ("text", tq)):
            ha, hb = a.search(kind, q, 10), b.search(kind, q, 10)
            eq += [[h.case_id for h in x] == [h.case_id for h in y] for x, y in zip(ha, hb)]
        run["identical_top10"] = f"{int(sum(eq))}/{len(eq)}"
        prev = same.get(run["workers"], {"queries": 0, "identical_top10": 0})
        same[run["workers"]] = {"queries": prev["queries"] + len(eq),
                                "identical_top10": prev["identical_top10"] + int(sum(eq))}
    out["equal_to_local"] = same
    ws = sorted(out["runs"])
    if len(ws) >= 2:
        lo, hi = out["runs"][ws[0]], out["runs"][ws[-1]]
        out["speedup"] = hi["cases_per_s"] / lo["cases_per_s"]  # whole encode phase, start-up included
        if lo.get("steady_window") and hi.get("steady_window"):
            out["speedup_steady_window"] = hi["steady_window"]["cases_per_s"] / lo["steady_window"]["cases_per_s"]
    if len(ws) >= 2 and args.repeats > 1:  # per repeat: the two runs adjacent in time, so under similar load
        per = {}
        for key, field in (("speedup", "cases_per_s"), ("speedup_steady_window", "steady_window")):
            vals = []
            for r in range(args.repeats):
                lo = next(x for x in out["repeats"] if x["repeat"] == r and x["workers"] == ws[0])
                hi = next(x for x in out["repeats"] if x["repeat"] == r and x["workers"] == ws[-1])
                if field == "steady_window":
                    if not (lo.get("steady_window") and hi.get("steady_window")):
                        continue
                    vals.append(hi["steady_window"]["cases_per_s"] / lo["steady_window"]["cases_per_s"])
                else:
                    vals.append(hi[field] / lo[field])
            if vals:
                per[key] = {"values": [round(v, 3) for v in vals], "median": round(float(np.median(vals)), 3),
                            "min": round(min(vals), 3), "max": round(max(vals), 3)}
        out["speedup_over_repeats"] = per
        out["per_worker_cases_per_s_median"] = {
            w: round(float(np.median([x["per_worker_cases_per_s"] for x in out["repeats"] if x["workers"] == w])), 3)
            for w in ws}
        out["load_avg_during_runs"] = [x["load_avg"] for x in out["repeats"]]
    out["load_avg_end"] = load_avg()
    print(json.dumps(out, indent=2))
    write_result(args.name or f"bench_scale_ray_{args.cases}", out)


# --------------------------------------------------------------------------------------------------- projection
def cmd_project(args) -> None:
    """10M / 100M / 1B on paper, from the per-vector costs measured at 1M (on-disk), 100k (pgvector) and the Ray
    engine's per-worker rate. Projected, not measured: the assumptions are written into the result."""
    res = REPO / "eval" / "results"
    od = json.loads((res / args.ondisk).read_text())
    ray = json.loads((res / args.ray).read_text()) if (res / args.ray).exists() else None
    pg = json.loads((res / args.pg).read_text()) if (res / args.pg).exists() else None
    n = od["n"]
    per = od["disk_bytes_per_vector"]
    ivf_b = per.get("index.ivfdata", 0)
    build = od["build"]
    add_s = (build["add_merge_s"] if "add_merge_s" in build else build["add_s"] + build["merge_s"]) / n
    # the search configuration projected: --search-spec if given, else the old single search
    searches = od.get("searches") or [{**od["search"], "spec": "sq8:disk:as-is" if "vectors.sq8" in per else
                                       "float32:disk:as-is"}]
    chosen = next((x for x in searches if x["spec"] == args.search_spec), searches[0]) if args.search_spec \
        else searches[0]
    store, place, _, *more = chosen["spec"].split(":")
    ivf_ram = more == ["ivf-ram"]
    raw_name = STORE_FILE[store]
    raw_b = per.get(raw_name, 0)
    best = min((r for r in chosen["sweep"] if r["refine_candidates"] and r["recall@10"] >= 0.9),
               key=lambda r: r["p50_ms"])
    best = {**best, "search_spec": chosen["spec"], "query_process_peak_rss_mb": chosen.get("peak_rss_mb")}
    if chosen.get("cgroup"):  # measured under a memory cgroup: the peak of process + page cache it touched
        best["query_cgroup_peak_mib (process + its page cache)"] = chosen["cgroup"]["peak_usage_mib"]
        best["query_cgroup_limit_mib"] = chosen["cgroup"]["limit_mib"]
    worker_rate = None
    if ray:
        worker_rate = max((r["steady_window"]["cases_per_s"] if r.get("steady_window") else
                           r.get("steady_cases_per_s", r["cases_per_s"])) / int(w) for w, r in ray["runs"].items())
    rows = []
    for N in (N for N in (10_000_000, 100_000_000, 1_000_000_000) if N > n):
        nlist = int(2 ** round(np.log2(4 * np.sqrt(N))))
        scanned_1m = best["nprobe"] * n / od["nlist"] if "nlist" in od else None
        row = {"vectors": N, "nlist": nlist,
               "factory": f"IVF{nlist}_HNSW32,PQ48 (+ re-ranking of {best['refine_candidates']} candidates)",
               "pq_codes_and_ids_GB (ivfdata)": round(N * ivf_b / 1e9, 2),
               f"re-ranking store GB ({raw_name}, " + {"ram": "held in RAM", "disk": "read with pread", "mmap": "memory-mapped"}[place]
               + ")": round(N * raw_b / 1e9, 1),
               "raw_float32_GB (if re-ranking on float32)": round(N * D * 4 / 1e9, 1),
               "quantiser_RAM_GB": round(nlist * D * 4 / 1e9, 3),
               "add_merge_core_hours": round(N * add_s / 3600, 1),
               "train_note": "k-means on ~40 vectors per list: " + f"{40 * nlist:,} vectors",
               "nodes_by_disk": int(np.ceil(N * (ivf_b + raw_b) / (args.node_disk_tb * 1e12)))}
        if place == "ram":  # what the query processes hold must fit half the nodes' RAM (the rest: OS, page cache)
            held = raw_b + (ivf_b if ivf_ram else 0)
            row["query_RAM_GB (" + ("IVF lists + " if ivf_ram else "") + "re-ranking store)"] = round(N * held / 1e9, 1)
            row["nodes_by_ram"] = int(np.ceil(N * held / (args.node_ram_gb * 0.5e9)))
        else:  # on disk: what a query node's page cache must hold for warm latencies (lists + store)
            row["page_cache_GB_for_warm_queries (IVF lists + re-ranking store)"] = round(N * (ivf_b + raw_b) / 1e9, 1)
            row["nodes_by_ram"] = int(np.ceil(N * (ivf_b + raw_b) / (args.node_ram_gb * 0.5e9)))
        if scanned_1m:
            row["codes_scanned_per_query_at_same_nprobe"] = int(best["nprobe"] * N / nlist)
        if worker_rate:
            row["encode_worker_days"] = round(N / worker_rate / 86400, 1)
        if pg:
            row["pgvector_hnsw_build_core_hours"] = round(N * pg["hnsw_build_s"] / pg["n"] / 3600, 1)
            row["pgvector_GB"] = round(N * (pg["table_bytes"]) / pg["n"] / 1e9, 1)
        rows.append(row)
    payload = {"from": {"ondisk": args.ondisk, "ray": args.ray, "pgvector": args.pg},
               "measured": {"ondisk_n": n, "ivfdata_bytes_per_vector": ivf_b, "rerank_bytes_per_vector": raw_b,
                            "add_merge_us_per_vector": add_s * 1e6, "best_measured": best,
                            "encode_cases_per_s_per_worker": worker_rate,
                            "load_avg_during_measurements": od.get("load_avg_at_end")},
               "projection": rows,
               "assumptions": "projected from the measurements named in 'from', on 2 shared cores (load "
               f"{od.get('load_avg_at_end', ['?'])[0]} at the end of the on-disk run, so the times are pessimistic); "
               "nlist ~ 4*sqrt(N); IVF lists and raw vectors on local NVMe, "
               "memory-mapped, quantiser in RAM; a query touches nprobe lists plus the re-ranked rows; add cost as "
               f"measured with {od['nlist']} lists and a flat quantiser, which needs an HNSW quantiser at 32k-131k "
               "lists to hold; one node holds "
               f"{args.node_disk_tb} TB; encoding at the measured CPU rate of the default encoders (a GPU is faster)"}
    print(json.dumps(payload, indent=2))
    write_result("bench_scale_projection", payload)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ondisk")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--block", type=int, default=200_000)
    p.add_argument("--nlist", type=int, default=0)
    p.add_argument("--pq", default="PQ48")
    p.add_argument("--nprobes", default="16,32,64")
    p.add_argument("--refine", default="10", help="comma list: re-rank refine×10 candidates exactly")
    p.add_argument("--rerank", default="float32",
                   help="re-ranking store(s), comma list of float32 (1,536 B/vector), sq8 (384), sq6 (288), sq4 (192): "
                   "faiss ScalarQuantizer codes; the build writes each, the search sweeps each")
    p.add_argument("--skip-search", action="store_true", help="build (or resume) only")
    p.add_argument("--stop-after-blocks", type=int, default=0,
                   help="finish the index after this many blocks (n = blocks x block): a smaller index from a "
                   "checkpointed build, with exact ground truth over its vectors")
    p.add_argument("--search", default=None,
                   help="comma list of STORE:ram|disk|mmap:CACHE search configurations, each in its own process, e.g. "
                   "sq6:ram:cold-query,sq8:disk:warm (CACHE: warm, cold, cold-query, as-is; default: the first "
                   "store on disk, warm with --warm-cache); a 4th field ivf-ram reads the IVF lists into memory")
    p.add_argument("--threads", type=int, default=0, help="FAISS threads for the build (0: its default)")
    p.add_argument("--queries", type=int, default=NQ, help="queries (exact ground truth over all n for each)")
    p.add_argument("--work", default=tempfile.gettempdir())
    p.add_argument("--name", default=None, help="result name (default bench_scale_ondisk_<n>)")
    p.add_argument("--rebuild", action="store_true", help="discard a checkpointed build in --work")
    p.add_argument("--cleanup", action="store_true", help="delete the work directory after the result is written")
    p.add_argument("--warm-cache", action="store_true",
                   help="read the index files once sequentially before timing (a server's page cache, not its RSS)")
    p.add_argument("--mem-limit-gib", type=float, default=0,
                   help="run each search process in a cgroup-v1 memory cgroup of this many GiB (page cache included) "
                   "after dropping the system page cache (root); skips the unrefined row")
    p.add_argument("--warmup", type=int, default=0,
                   help="queries (other draws than the measured ones) run before the timed sweep, at its largest "
                   "nprobe and refine; their latencies are reported apart (cold when the cache was dropped)")
    p = sub.add_parser("_search")
    p.add_argument("work")
    p.add_argument("--nprobes", default="16,32,64")
    p.add_argument("--refine", default="10")
    p.add_argument("--rerank", default="float32", help="one re-ranking store")
    p.add_argument("--store-in-ram", action="store_true")
    p.add_argument("--store-mmap", action="store_true", help="gather re-ranking rows from a read-only memory map")
    p.add_argument("--ivf-in-ram", action="store_true", help="read the IVF lists into memory at open")
    p.add_argument("--cache", choices=CACHE_MODES, default="as-is")
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--skip-unrefined", action="store_true")
    p.add_argument("--caches-dropped", action="store_true", help="(description) the parent dropped the page cache")
    p = sub.add_parser("pgvector")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--work", default=None)
    p = sub.add_parser("pgcopy")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--work", default=None)
    p = sub.add_parser("ray")
    p.add_argument("--cases", type=int, default=240)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--shard-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=1, help="repeat the worker sweep, alternating its order")
    p.add_argument("--queries", type=int, default=60)
    p.add_argument("--image-encoder", default="ragmed-default")
    p.add_argument("--address", default=None, help="an existing Ray cluster (default: a local 2-CPU one)")
    p.add_argument("--name", default=None, help="result name (default bench_scale_ray_<cases>)")
    p.add_argument("--work", default=tempfile.gettempdir())
    p = sub.add_parser("project")
    p.add_argument("--ondisk", default="bench_scale_ondisk_1M.json")
    p.add_argument("--ray", default="bench_scale_ray_160.json")
    p.add_argument("--pg", default="bench_scale_pgvector_100k.json")
    p.add_argument("--node-disk-tb", type=float, default=8.0)
    p.add_argument("--node-ram-gb", type=float, default=256.0)
    p.add_argument("--search-spec", default=None, help="which of the on-disk result's searches to project")
    args = ap.parse_args()
    {"ondisk": cmd_ondisk, "_search": cmd_search, "pgvector": cmd_pgvector, "pgcopy": cmd_pgcopy, "ray": cmd_ray,
     "project": cmd_project}[args.cmd](args)


if __name__ == "__main__":
    main()
