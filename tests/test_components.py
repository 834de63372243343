"""Components are built once from the config or injected; the query flow's stages run one by one (issue 11)."""
from __future__ import annotations

import threading

import pytest

from ragmed.config import PipelineConfig
from ragmed.corpus import read_corpus
from ragmed.pipeline import Components, Pipeline
from ragmed.types import Generation
from tests.corpus_utils import png_corpus

CFG = {"encoders": {"text": {"name": "minilm"}, "image": {"name": "classic"}},
       "select": {"name": "fixed", "params": {"k": 2}}}


@pytest.fixture(scope="module")
def built(tmp_path_factory, text_encoder):
    from ragmed.pipeline import build_from_config

    root = tmp_path_factory.mktemp("components")
    cfg = PipelineConfig.from_dict(CFG)
    build_from_config(read_corpus(png_corpus(root / "c", 8)), root / "idx", cfg, progress=False,
                      text_encoder=text_encoder)
    return root, cfg


def test_unknown_component_names_the_available_ones():
    with pytest.raises(TypeError, match="unknown component.*'generatr'.*available: store, text_encoder"):
        Components(PipelineConfig(), "x", generatr=object())


def test_given_components_are_used_and_the_rest_built_once(built, text_encoder):
    root, cfg = built

    class Counting:
        id = "counting"
        calls = 0

        def warm_up(self):
            pass

        def generate(self, question, evidence, knowledge, *, image=None, domain=None, task="open"):
            Counting.calls += 1
            return Generation(text=f"{len(evidence)} cases [1]", citations=["[1]"], model=self.id)

    p = Pipeline.from_components(cfg, root / "idx", text_encoder=text_encoder, generator=Counting())
    assert p.text_encoder is text_encoder and p.generator.id == "counting"
    stores = []
    threads = [threading.Thread(target=lambda: stores.append(p.store)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in stores}) == 1  # built once under concurrency
    # an open question: closed answers also pass issue S's evidence-level abstention, which is not what this tests
    a = p.ask(root / "c" / "img3.png", "What does the image show?")
    assert a.models["generator"] == "counting" and Counting.calls == 1 and a.text.startswith("2 cases")


def test_stages_one_by_one(built, text_encoder):
    root, cfg = built
    p = Pipeline.from_components(cfg, root / "idx", text_encoder=text_encoder)
    r = p.retrieve(root / "c" / "img3.png", "Is there a pneumothorax?", k=5)
    assert len(r.candidates) == 5 and r.image is not None
    sel = p.select(r.candidates)
    assert [e.ref for e in sel.kept] == ["[1]", "[2]"]
    assert len(sel.kept) == 2 and all(e.case_id in {c.case_id for c in r.candidates} for e in sel.kept)
    g = p.generate("Is there a pneumothorax?", sel.kept, image=root / "c" / "img5.png")  # another image
    assert isinstance(g, Generation) and g.text and set(g.citations) <= {"[1]", "[2]"}
    g0 = p.generate("Is there a pneumothorax?", [], image=None)  # no evidence at all: the generator alone
    assert isinstance(g0, Generation) and not g0.citations
    a = p.answer(r, "Is there a pneumothorax?")
    assert a.evidence and a.evidence[0].case_id == sel.kept[0].case_id


def test_generators_take_the_pipelines_text_encoder_by_their_registry_flag(built, text_encoder):
    """``shares_text_encoder`` in a generator's registry entry decides whether it gets the pipeline's text encoder:
    "any" always; an encoder name only when the pipeline uses exactly that encoder with default parameters."""
    from ragmed.generate import register_generator

    root, cfg = built
    seen = {}

    def factory(name):
        def make(text_encoder=None, **params):
            seen[name] = text_encoder
            return object()
        return make

    register_generator("plumbing-any", factory("plumbing-any"), shares_text_encoder="any")
    register_generator("plumbing-minilm", factory("plumbing-minilm"), shares_text_encoder="minilm")
    register_generator("plumbing-none", factory("plumbing-none"))
    for name in ("plumbing-any", "plumbing-minilm", "plumbing-none"):
        c = PipelineConfig.from_dict({**CFG, "generator": {"name": name}})
        _ = Components(c, root / "idx", text_encoder=text_encoder).generator
    assert seen["plumbing-any"] is text_encoder and seen["plumbing-minilm"] is text_encoder
    assert seen["plumbing-none"] is None
    # the same encoder name with other parameters is another vector space: not shared
    c = PipelineConfig.from_dict({**CFG, "encoders": {"text": {"name": "minilm", "params": {"space": "my-minilm"}},
                                                      "image": {"name": "classic"}},
                                  "generator": {"name": "plumbing-minilm"}})
    seen.clear()
    _ = Components(c, root / "idx", text_encoder=text_encoder).generator
    assert seen["plumbing-minilm"] is None


def test_a_path_given_as_the_config_is_refused_with_the_right_constructor_named(tmp_path):
    from pathlib import Path

    with pytest.raises(TypeError, match=r"config must be a PipelineConfig, not str.*Pipeline\.for_index\('indexes/x'\)"):
        Pipeline("indexes/x")
    with pytest.raises(TypeError, match=r"not PosixPath.*Pipeline\.from_yaml"):
        Components(Path("pipelines/default.yaml"))
    with pytest.raises(TypeError, match=r"not dict$"):
        Pipeline({"name": "x"})


def test_ask_takes_the_files_bytes_and_refuses_bad_k_task_and_image_types(built, text_encoder):
    import numpy as np

    from ragmed.errors import ConfigError
    from ragmed.text.questions import QuestionError

    root, cfg = built
    p = Pipeline.from_components(cfg, root / "idx", text_encoder=text_encoder)
    img = root / "c" / "img3.png"
    by_path = p.retrieve(img, "What does the image show?")
    by_bytes = p.retrieve(img.read_bytes(), "What does the image show?")
    assert [c.case_id for c in by_bytes.candidates] == [c.case_id for c in by_path.candidates]
    assert by_bytes.image.content_hash == by_path.image.content_hash and by_bytes.image.source == "upload"
    for k in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="k must be a whole number of cases, at least 1"):
            p.ask(img, "What does the image show?", k=k)
    assert len(p.retrieve(img, "What does the image show?", k=np.int64(3)).candidates) == 3
    with pytest.raises(QuestionError, match="unknown task 'summarise'; use one of closed, open, report"):
        p.ask(img, "What does the image show?", task="summarise")
    with pytest.raises(TypeError, match="not ndarray .save the array as a PNG"):
        p.ask(np.zeros((32, 32), dtype=np.uint8), "What does the image show?")
