"""Sharded and on-disk FAISS serving, on FAISS's own machinery (``IndexShards``, ``OnDiskInvertedLists``,
``faiss.contrib.ondisk.merge_ondisk``, memory-mapped reads).

Three layouts of one domain sub-index ``domains/<domain>/<kind>``:

- ``<kind>.faiss``: one index in memory (the local build's layout).
- ``<kind>.faiss`` + ``<kind>.ivfdata``: an IVF index whose inverted lists live on disk and are memory-mapped by
  the reader, so only the coarse quantiser and the pages the probed lists touch occupy RAM. Built block by block:
  a quantiser trained on a sample, each block of vectors added to a copy of the empty trained index and written,
  then the blocks' inverted lists merged into one ``.ivfdata`` file.
- ``<kind>.shards.json`` + ``<kind>-shard-NNN.faiss``: N indexes searched together by ``faiss.IndexShards``
  (``successive_ids=False``: every shard keeps the explicit vector ids it was built with, which map to cases).

For IVF indexes that share one trained quantiser, and for flat indexes, search over shards or over on-disk lists gives
the same results as the monolithic index over the same vectors (``tests/test_ondisk.py`` checks it).
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ragmed.errors import IndexStoreError

SHARDS = "{kind}.shards.json"


def _faiss():
    import faiss

    return faiss


def train_empty(factory: str, dim: int, sample: np.ndarray):
    """An empty index of ``factory`` (inner product) trained on ``sample``; IVF factories keep explicit ids."""
    faiss = _faiss()
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise IndexStoreError(f"invalid FAISS factory string {factory!r}: {str(e).splitlines()[-1][:160]}") from e
    if faiss.try_extract_index_ivf(index) is None:
        index = faiss.IndexIDMap2(index)  # flat / HNSW: ids kept beside the vectors
    if not index.is_trained:
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def write_ondisk(trained, blocks: Iterable[tuple[np.ndarray, np.ndarray]], index_path: str | Path) -> int:
    """Add ``(ids, vectors)`` blocks to copies of the empty ``trained`` IVF index, merge their inverted lists into
    ``<index_path minus .faiss>.ivfdata`` and write the index file. Memory: one block at a time. Returns ntotal."""
    _require_ivf(trained)
    index_path = Path(index_path)
    work = index_path.parent / f".{index_path.stem}-blocks"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    names = []
    for b, (ids, vecs) in enumerate(blocks):
        if len(ids) == 0:
            continue
        name = work / f"block-{b:06d}.faiss"
        write_block(trained, ids, vecs, name)
        names.append(name)
    n = merge_blocks(trained, names, index_path)
    shutil.rmtree(work, ignore_errors=True)
    return n


def _require_ivf(trained) -> None:
    if _faiss().try_extract_index_ivf(trained) is None:
        raise IndexStoreError("on-disk inverted lists need an IVF factory (e.g. 'IVF4096,PQ32' or 'IVF1024,Flat')")


def write_block(trained, ids: np.ndarray, vecs: np.ndarray, path: str | Path) -> int:
    """One block of an on-disk build: ``(ids, vecs)`` added to a copy of the empty ``trained`` IVF index, written
    atomically to ``path`` (so a resumed build can trust every block file it finds). Returns the block's size."""
    faiss = _faiss()
    _require_ivf(trained)
    path = Path(path)
    part = faiss.clone_index(trained)
    part.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    tmp = path.with_name(f".{path.name}.tmp")
    faiss.write_index(part, str(tmp))
    os.replace(tmp, path)
    return int(part.ntotal)


def merge_blocks(trained, block_paths: Iterable[str | Path], index_path: str | Path) -> int:
    """Merge the inverted lists of block files (from :func:`write_block`) into ``<index_path minus .faiss>.ivfdata``
    with ``faiss.contrib.ondisk.merge_ondisk`` and write the index file atomically. Returns ntotal."""
    faiss = _faiss()
    from faiss.contrib.ondisk import merge_ondisk

    _require_ivf(trained)
    index_path = Path(index_path)
    names = [str(p) for p in block_paths]
    index = faiss.clone_index(trained)
    ivfdata = index_path.with_suffix(".ivfdata")
    ivfdata.unlink(missing_ok=True)
    if names:
        merge_ondisk(index, names, str(ivfdata))
    else:  # an empty on-disk index is still a valid one
        ivf = faiss.extract_index_ivf(index)
        inv = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(ivfdata))
        ivf.replace_invlists(inv, True)
        inv.this.disown()
    tmp = index_path.with_name(f".{index_path.name}.tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, index_path)
    n = int(index.ntotal)
    del index
    return n


def write_shards(trained, blocks: Iterable[tuple[np.ndarray, np.ndarray]], directory: str | Path, kind: str) -> int:
    """One shard per ``(ids, vectors)`` block, each a copy of the empty ``trained`` index; writes
    ``<kind>-shard-NNN.faiss`` and ``<kind>.shards.json``. Returns the total number of vectors."""
    faiss = _faiss()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files, total = [], 0
    for b, (ids, vecs) in enumerate(blocks):
        part = faiss.clone_index(trained)
        if len(ids):
            part.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
        name = f"{kind}-shard-{b:03d}.faiss"
        faiss.write_index(part, str(directory / name))
        files.append({"file": name, "n": int(part.ntotal)})
        total += int(part.ntotal)
    (directory / SHARDS.format(kind=kind)).write_text(json.dumps({"shards": files, "n": total}, indent=2))
    return total


def read_domain_index(directory: str | Path, kind: str, *, ef_search: int = 128, nprobe: int = 32, mmap: bool = False):
    """Open ``directory/<kind>`` in whichever layout it is (monolithic, on-disk, shards), with search parameters set;
    ``None`` when the domain has no such vectors."""
    faiss = _faiss()
    from ragmed.index.faiss_utils import set_search_params

    directory = Path(directory)
    manifest = directory / SHARDS.format(kind=kind)
    if manifest.exists():
        spec = json.loads(manifest.read_text())
        parts = [_read(faiss, directory / s["file"], mmap) for s in spec["shards"]]
        if not parts:
            return None
        for p in parts:
            set_search_params(p, ef_search=ef_search, nprobe=nprobe)
        shards = faiss.IndexShards(parts[0].d, True, False)  # threaded, successive_ids=False: keep explicit ids
        for p in parts:
            shards.add_shard(p)
        return shards
    f = directory / f"{kind}.faiss"
    if not f.exists():
        return None
    index = _read(faiss, f, mmap)
    set_search_params(index, ef_search=ef_search, nprobe=nprobe)
    return index


def _read(faiss, path: Path, mmap: bool):
    flags = 0
    if path.with_suffix(".ivfdata").exists():
        flags |= faiss.IO_FLAG_ONDISK_SAME_DIR  # the .ivfdata beside the index file, wherever the version moved
    elif mmap:
        flags |= faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError as e:
        raise IndexStoreError(f"cannot read FAISS index: {str(e).splitlines()[-1][:200]}", path=str(path)) from e


def shard_domain_index(version_dir: str | Path, domain: str, kind: str, n_shards: int) -> int:
    """Re-lay a built domain sub-index (its raw vector parts) as ``n_shards`` shards that share the built index's
    trained quantiser; the monolithic file is kept only if it is not replaced. Returns the number of vectors."""
    faiss = _faiss()
    from ragmed.index.parts import load_parts

    version_dir = Path(version_dir)
    directory = version_dir / "domains" / domain
    mono = faiss.read_index(str(directory / f"{kind}.faiss"))
    trained = empty_like(mono)
    ids, vecs = load_parts(version_dir / "vectors", domain, kind)
    bounds = np.linspace(0, len(ids), n_shards + 1).astype(int)
    n = write_shards(trained, ((ids[a:b], vecs[a:b]) for a, b in zip(bounds[:-1], bounds[1:])), directory, kind)
    (directory / f"{kind}.faiss").unlink()
    return n


def empty_like(index):
    """An empty copy of a built index, keeping its training (quantiser, PQ codebooks)."""
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        out = faiss.clone_index(index)
        out.reset()
        return out
    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    if isinstance(inner, faiss.IndexHNSW):  # an HNSW graph cannot be emptied: rebuild from its storage type
        raise IndexStoreError("HNSW indexes are sharded by rebuilding them per shard; use 'Flat' or an IVF factory")
    out = faiss.clone_index(index)
    out.reset()
    return out


def ivf_in_memory(index_path: str | Path):
    """Load an on-disk IVF index fully into RAM (``ArrayInvertedLists``), e.g. to compare with the on-disk one or to
    serve without depending on the page cache. The lists are read with ``pread`` (each list's codes, then its ids, at
    the offsets ``OnDiskInvertedLists`` records), not through the memory map, so the process holds one copy of them."""
    faiss = _faiss()
    index = _read(faiss, Path(index_path), mmap=False)
    ivf = faiss.extract_index_ivf(index)
    od = faiss.downcast_InvertedLists(ivf.invlists)
    if isinstance(od, faiss.OnDiskInvertedLists):
        mem = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
        cs = int(ivf.code_size)
        fd = os.open(od.filename, os.O_RDONLY)
        try:
            for li in range(ivf.nlist):
                one = od.lists.at(li)
                ls = int(one.size)
                if ls:
                    codes = np.frombuffer(os.pread(fd, ls * cs, int(one.offset)), dtype=np.uint8)
                    ids = np.frombuffer(os.pread(fd, ls * 8, int(one.offset) + cs * int(one.capacity)), dtype=np.int64)
                    mem.add_entries(li, ls, faiss.swig_ptr(ids), faiss.swig_ptr(codes))
        finally:
            os.close(fd)
        ivf.replace_invlists(mem, True)
        mem.this.disown()
    return index
