"""The build flow decodes each image once: with the image tower fitted at build time, with a domain router fitted
from the build's own vectors, and when adding to an index (the router is refitted from stored vectors and image
statistics). Decodes are counted by a real reader registered in the reader registry: it delegates to the built-in
reader that recognises the file and counts each file it decodes."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ragmed.config import PipelineConfig
from ragmed.corpus import read_corpus
from ragmed.index import build_index, open_index
from ragmed.io import READER_REGISTRY, READERS
from ragmed.io.readers import DicomReader, PillowReader
from tests.corpus_utils import png_corpus


class CountingReader:
    """The built-in readers, wrapped: decodes exactly as they do and counts the decodes per file name."""

    name = "counting"
    counts: Counter = Counter()

    def __init__(self):
        self.inner = [DicomReader(), PillowReader()]

    def _pick(self, head: bytes):
        return next((r for r in self.inner if r.sniff(head)), None)

    def sniff(self, head: bytes) -> bool:
        return self._pick(head) is not None

    def can_read(self, path: Path, head: bytes) -> bool:
        return False

    def read(self, path: Path, shown: str, **options):
        with open(path, "rb") as f:
            reader = self._pick(f.read(256))
        if not isinstance(reader, DicomReader):
            options.pop("isolate", None)
        CountingReader.counts[Path(path).name] += 1
        return reader.read(path, shown, **options)


@pytest.fixture
def counting():
    """Register the counting reader first in line (it recognises what the built-in ones do), remove it after."""
    reader = CountingReader()
    CountingReader.counts = Counter()
    READER_REGISTRY.register("counting", CountingReader)
    READERS.insert(0, reader)
    try:
        yield CountingReader.counts
    finally:
        READERS.remove(reader)
        READER_REGISTRY._entries.pop("counting", None)


def test_a_fitted_build_decodes_each_image_once(tmp_path, text_encoder, counting):
    cfg = PipelineConfig.from_dict({"encoders": {"text": {"name": "minilm"}, "image": {"name": "ragmed-default"}},
                                    "index": {"fit_image_encoder": True, "fit_epochs": 1, "fit_min_steps": 3,
                                              "fit_max_steps": 3, "batch_size": 4}})
    corpus = read_corpus(png_corpus(tmp_path / "c", 10))
    rep = build_index(corpus, tmp_path / "idx", cfg, text_encoder=text_encoder, progress=False)
    assert rep.n_images == 10 and "fit" in rep.timings
    assert len(counting) == 10 and set(counting.values()) == {1}, counting  # fit + index: one decode per image
    store = open_index(tmp_path / "idx")
    assert store.encoders["image"]["id"].startswith("ragmed-default-fit-")
    assert not (store.version_dir / "spool").exists() and not (tmp_path / "idx" / ".fit").exists()
    # the spooled vectors are the fitted tower's vectors of the decoded images
    from ragmed.encoders.default import RagmedImageEncoder
    from ragmed.io import load_image

    enc = RagmedImageEncoder(store.version_dir / "image_encoder")
    ids, vecs = store.vectors("all", "image")
    rows = {r["vec_id"]: r["source"] for r in store.image_rows()}
    again = enc.encode_images([load_image(Path(corpus.root) / rows[int(i)]) for i in ids])
    np.testing.assert_allclose(vecs, again, atol=1e-5)


def test_router_fit_and_add_decode_each_image_once(tmp_path, text_encoder, counting):
    from tests.conftest import data_path
    from tests.multidomain_utils import multidomain_config, write_corpus

    from ragmed.pipeline.build import build_from_config

    data = data_path()
    cfg = multidomain_config()
    first = write_corpus(data, tmp_path / "a", 6)
    rep = build_from_config(read_corpus(first), tmp_path / "idx", cfg, progress=False, fit=False)
    assert rep.post_build["router"]["fitted"] is True
    n_first = sum(counting.values())
    assert n_first == rep.n_images and set(counting.values()) == {1}, counting
    store = open_index(tmp_path / "idx")
    for dom in store.domains:  # the router's image statistics are stored beside the vectors
        assert len(store.vectors(dom, "features")[0]) == len(store.vectors(dom, "image")[0])
    # add 2 more cases per domain: only they are decoded, and the router is refitted on all of them
    more = read_corpus(write_corpus(data, tmp_path / "b", 8))
    rep2 = build_from_config(more, tmp_path / "idx", cfg, progress=False, add=True)
    assert rep2.n_images == rep.n_images + 8
    assert sum(counting.values()) == n_first + 8 and set(counting.values()) == {1}, counting
    assert rep2.post_build["router"]["fitted"] is True and rep2.post_build["router"]["decode_failed"] == 0
    assert sum(rep2.post_build["router"]["n_per_class"].values()) > sum(rep.post_build["router"]["n_per_class"].values())


def test_bounded_cache_keeps_the_most_recently_used():
    from ragmed.cache import BoundedCache

    c: BoundedCache[str, int] = BoundedCache(2)
    built = []
    for k in ["a", "b", "a", "c", "b"]:
        c.get_or_create(k, lambda k=k: built.append(k) or len(built))
    assert built == ["a", "b", "c", "b"]  # "b" was the least recently used when "c" came in
    assert len(c) == 2 and "a" not in c and c.get("c") == 3
