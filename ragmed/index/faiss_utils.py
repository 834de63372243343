"""FAISS helpers: factory strings, training, search parameters, GPU when present. Imported lazily."""
from __future__ import annotations

import numpy as np

from ragmed.errors import IndexStoreError


def resolve_factory(factory: str, n: int, auto_flat_below: int = 50_000) -> str:
    """``auto`` → exact ``Flat`` for small collections, ``HNSW32,Flat`` above ``auto_flat_below`` vectors."""
    if factory == "auto":
        return "Flat" if n < auto_flat_below else "HNSW32,Flat"
    return factory


def build_faiss(vectors: np.ndarray, ids: np.ndarray, factory: str, *, seed: int = 0, ef_construction: int = 80):
    """Build an ``IndexIDMap2`` over ``factory`` with inner product (vectors are L2-normalised: cosine)."""
    import faiss

    n, d = vectors.shape if vectors.ndim == 2 else (0, 0)
    try:
        inner = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise IndexStoreError(f"invalid FAISS factory string {factory!r}: {str(e).splitlines()[-1][:160]}") from e
    hnsw = _hnsw_of(inner)
    if hnsw is not None:
        hnsw.efConstruction = ef_construction
    if not inner.is_trained:
        need = _train_size(inner)
        if n < need:
            raise IndexStoreError(f"factory {factory!r} needs at least {need} vectors to train; the corpus has {n} "
                                  "(use 'Flat' or 'auto' for small corpora)")
        rng = np.random.default_rng(seed)
        sample = vectors[rng.choice(n, size=min(n, max(need * 4, 50_000)), replace=False)] if n > need else vectors
        inner.train(np.ascontiguousarray(sample, dtype=np.float32))
    index = faiss.IndexIDMap2(inner)
    step = 100_000
    for i in range(0, n, step):
        index.add_with_ids(np.ascontiguousarray(vectors[i:i + step], dtype=np.float32),
                           np.ascontiguousarray(ids[i:i + step], dtype=np.int64))
    return index


def _hnsw_of(index):
    import faiss

    base = faiss.downcast_index(index)
    return getattr(base, "hnsw", None)


def _train_size(index) -> int:
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return max(ivf.nlist * 4, 256)
    return 256


def set_search_params(index, *, ef_search: int = 128, nprobe: int = 32) -> None:
    import faiss

    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    hnsw = getattr(inner, "hnsw", None)
    if hnsw is not None:
        hnsw.efSearch = ef_search
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is not None:
        ivf.nprobe = min(nprobe, ivf.nlist)


def to_gpu_if_available(index):
    """Move a CPU index to all GPUs when faiss has GPU support and a GPU is present; else return it unchanged."""
    import faiss

    try:
        if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0 and hasattr(faiss, "index_cpu_to_all_gpus"):
            return faiss.index_cpu_to_all_gpus(index)
    except Exception:  # an index type without GPU support stays on the CPU
        return index
    return index


def check_queries(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"queries must have shape (n, {dim}); got {x.shape}")
    return np.ascontiguousarray(x)
