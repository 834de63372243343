"""ragmed-answerer (ragmed/generate/answerer): a tiny randomly initialised instance trains and predicts (a FAKE model:
plumbing only; it learns a toy rule that needs the image), save/load round trip, and the shipped weights answering a
closed question about a real VQA-RAD image through Pipeline.ask, citing only agreeing cases."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

TINY_TOWER = {"widths": [8, 16], "stem": 8, "stem_stride": 4, "body_convs": 1, "head_grid": 0, "embed_dim": 384}


def _toy(n=64, seed=0):
    """Bright vs dark images; one question 'is it bright?' (answer depends on the image only)."""
    rng = np.random.default_rng(seed)
    bright = rng.integers(0, 2, n)
    arr = np.zeros((n, 32, 32, 3), dtype=np.uint8)
    arr[..., 1:] = 128
    arr[..., 0] = np.where(bright[:, None, None], 220, 30)
    arr[..., 0] = np.clip(arr[..., 0] + rng.normal(0, 10, (n, 32, 32)), 0, 255).astype(np.uint8)
    q = np.tile(rng.normal(size=(1, 384)).astype(np.float32), (n, 1))
    return arr, q, np.where(bright, 0, 1)  # vocab ["yes", "no"]


@pytest.mark.parametrize("kw", [{}, {"img_dim": 8, "align": True}, {"img_dim": 6, "aux": [3, 3], "agree": True}])
def test_tiny_instance_trains_predicts_and_round_trips(tmp_path, kw):
    from ragmed.encoders.tower import PreprocessConfig, to_tensor_batch
    from ragmed.generate.answerer.model import Answerer, build_model, choose, save

    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(2, TINY_TOWER, hidden=16, qdim=384, dropout=0.0,
                            **{k: tuple(v) if k == "aux" else v for k, v in kw.items()})
    arr, q, y = _toy()
    pre = PreprocessConfig(size=32)
    x, qt, yt = to_tensor_batch(arr, pre), torch.from_numpy(q), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        idx = torch.randint(0, len(y), (16,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(qt[idx], x[idx]), yt[idx])
        if kw.get("aux"):  # the image-level auxiliary targets: here brightness in both heads
            loss = loss + sum(torch.nn.functional.cross_entropy(lg, yt[idx]) for lg in model.aux_logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
    cfg = {"name": "tiny", "vocab": ["yes", "no"], "tower": TINY_TOWER, "preprocess": pre.to_dict(),
           "arch": {"hidden": 16, "qdim": 384, "image_branch": True, **kw}}
    save(model, tmp_path / "w", cfg)
    ans = Answerer(tmp_path / "w")
    p = ans.probabilities(q, arr)
    assert p.shape == (len(y), 2) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert (p.argmax(1) == y).mean() >= 0.9  # it reads the image: the question is the same for every sample
    if kw.get("aux"):  # the image-level heads' probabilities, one array per head
        heads = ans.image_heads(arr)
        assert [h.shape for h in heads] == [(len(y), 3), (len(y), 3)] and np.allclose(heads[0].sum(1), 1, atol=1e-5)
    a, c = choose(p[0], ans.index, ["yes", "no"])
    assert a in ("yes", "no") and 0.5 <= c <= 1.0
    assert choose(p[0], ans.index, ["left", "right"]) == (None, 0.0)


def test_shipped_weights_load_and_answer_through_pipeline_ask(tmp_path):
    from ragmed.generate.answerer import shipped_path

    if not (shipped_path() / "model.safetensors").exists():
        pytest.skip("no shipped ragmed-answerer weights")
    from ragmed.generate.text import yes_no
    from ragmed.text.negation import finding_status  # noqa: F401  (S's detector, used by ground())
    from tests.corpus_utils import vqa_rad_split_pipeline

    p, images, rows, train = vqa_rad_split_pipeline(
        tmp_path, 8, "answerer-test", 5, "{name: ragmed-answerer, params: {fallback: vote, min_closed_confidence: 0}}")
    img = train[0]
    qs = [r for r in rows if r["image_name"] == img and r["answer_type"].strip() == "CLOSED"
          and str(r["answer"]).strip().lower() in ("yes", "no")]
    assert qs
    a = p.ask(images / img, qs[0]["question"], task="closed")
    assert a.models["generator"].startswith("ragmed-answerer")
    assert not a.insufficient_evidence
    said = yes_no(a.text)
    assert said in ("yes", "no")
    assert any(f.startswith("answer-confidence:") for f in a.flags)
    assert set(a.citations) <= {e.ref for e in a.evidence}
    # cited cases agree with the answer (S's rule); when none agrees the answer says so and is flagged
    from ragmed.generate.citations import evidence_says

    by_ref = {e.ref: e for e in a.evidence}
    for r in a.citations:
        assert evidence_says(qs[0]["question"], by_ref[r].text or by_ref[r].excerpt) == said
    assert a.citations or "no-agreeing-case" in a.flags
    # the same question with noise in place of the image goes through the same path (the classifier sees pixels)
    gen = p.components.generator
    assert gen.predict(qs[0]["question"], p.retrieve(images / img, qs[0]["question"]).image)[0] == said
    # a calibrated threshold above the confidence turns the answer into an abstention
    g = gen.generate(qs[0]["question"], a.evidence, [], image=p.retrieve(images / img).image, task="closed")
    w = gen.abstain(g, qs[0]["question"], a.evidence, task="closed", min_confidence=1.01)
    assert w.insufficient and w.citations == [] and f"withheld:{said}" in w.flags


def _open_question_setup(tmp_path, **kw):
    """The shipped classifier with a FAKE tiny causal LM (plumbing only) as its fallback, forced to answer every open
    question (min_open_confidence above 1)."""
    pytest.importorskip("transformers")
    from ragmed.generate.answerer import AnswererGenerator, shipped_path

    if not (shipped_path() / "model.safetensors").exists():
        pytest.skip("no shipped ragmed-answerer weights")
    from ragmed.generate.testing import write_tiny_causal_lm
    from ragmed.io import MedicalImage
    from ragmed.types import Evidence

    lm = tmp_path / "lm"
    if not lm.exists():
        write_tiny_causal_lm(lm)
    rng = np.random.default_rng(0)
    image = MedicalImage(pixels=rng.random((64, 64), dtype=np.float32), source="noise", content_hash="noise",
                         format="png")
    ev = [Evidence(case_id=f"c{i}", score=1.0 - i / 10, ref=f"[{i + 1}]", text=t, excerpt=t)
          for i, t in enumerate(["Right lower lobe consolidation.", "No effusion. Normal heart size."])]
    gen = AnswererGenerator(fallback="transformers", fallback_params={"path": str(kw.pop("path", lm)),
                                                                     "kind": "causal-lm", "threads": 1},
                            min_open_confidence=1.01, **kw)
    return gen, image, ev


def test_fallback_in_a_child_process_gives_the_in_process_answer(tmp_path):
    """``fallback_in_child: true`` (off by default): an open question starts the fallback's load in a child process
    (its own GIL) while retrieval runs; the answer is the one the same fallback gives in this process."""
    q = "Where is the consolidation?"
    inproc, image, ev = _open_question_setup(tmp_path)
    assert not inproc.fallback_in_child  # the default
    want = inproc.generate(q, ev, [], image=image, task="open")
    gen, _, _ = _open_question_setup(tmp_path, fallback_in_child=True)
    assert not gen._ready
    gen.warm_up_async()  # what Pipeline.ask does for a question that is not closed
    assert gen._child is not None and gen._ready  # loading (or loaded) in the child: not started twice
    got = gen.generate(q, ev, [], image=image, task="open")
    assert (got.text, got.citations, got.flags, got.model) == (want.text, want.citations, want.flags, want.model)
    assert any(f.startswith("answerer-fallback:low-confidence") for f in got.flags)
    again = gen.generate("Which lobe?", ev, [], image=image, task="open")  # the same child answers again
    assert again.text == inproc.generate("Which lobe?", ev, [], image=image, task="open").text
    proc = gen._child._proc
    gen._child.close()
    assert proc.poll() is not None  # the child ends when its input closes


def test_fallback_child_error_is_raised_in_the_parent(tmp_path):
    from ragmed.errors import ModelNotFoundError

    gen, image, ev = _open_question_setup(tmp_path, path=tmp_path / "absent", fallback_in_child=True)
    gen.warm_up_async()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        gen.generate("Where is the consolidation?", ev, [], image=image, task="open")
    gen._child.close()


def test_image_level_answers_from_question_type_and_head():
    """ImageLevel (image_level.json): the question-type classifier decides whether the head answers; the answer is the
    vocabulary entry with the best expected score under the head's label probabilities (hand-set parameters)."""
    from ragmed.generate.answerer.model import ImageLevel

    e = np.eye(4)
    params = {"qtype": {"classes": ["ORGAN", "OTHER"], "coef": (10 * e[:2]).tolist(), "intercept": [0.0, 0.0]},
              "heads": {"organ": {"labels": ["HEAD", "CHEST", "ABD"], "coef": (10 * e[:3]).tolist(),
                                  "intercept": [0.0, 0.0, 0.0], "n_images": 3}},
              "head_of_type": {"ORGAN": "organ"}, "candidates": ["brain", "chest", "abdomen"], "criterion": "f1",
              "tables": {"f1": {"ORGAN": [[1, 0, 0], [0, 1, 0], [0, 0.2, 0.8]]},
                         "recall": {"ORGAN": [[1, 0, 0], [0, 1, 0], [0, 1, 0]]}}}
    il = ImageLevel(params)
    q = np.stack([e[0], e[0], e[1]])  # organ question, organ question, another question
    emb = np.stack([e[0], e[2], e[0]])  # a head image, an abdomen image
    out = il.answers(q, emb)
    assert [o[0] if o else None for o in out] == ["brain", "abdomen", None]
    assert out[0][2] == "ORGAN" and 0.9 < out[0][1] <= 1.0
    il.set_criterion("recall", params["tables"])  # the recall table maps the abdomen label to "chest" here
    assert il.answers(q[1:2], emb[1:2])[0][0] == "chest"
