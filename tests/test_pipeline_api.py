"""The Python API: ragmed.Pipeline.from_yaml / ask / retrieve / ask_batch / ask_manifest, thread safety."""
from __future__ import annotations

import csv
import json
import threading

import pytest

from ragmed.errors import DomainError, RagmedError
from tests.conftest import data_path
from tests.multidomain_utils import make_nonmedical, pick_images, shared_md_index  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def api_index(shared_md_index):
    return shared_md_index


@pytest.fixture(scope="module")
def pipe(api_index):
    import ragmed

    return ragmed.Pipeline.from_yaml("multidomain", index=api_index)


def test_ask_returns_a_cited_routed_answer(pipe):
    img = pick_images(data_path(), "mri", 1, offset=40)[0]
    a = pipe.ask(img, "Is there a glioma?")
    assert a.domain in {"mri", "pathology", "dermatology", "microscopy"} or a.domain is None
    assert a.image["route"]["method"] == "classifier" and 0 <= a.domain_confidence <= 1
    assert a.selection.rule == "gap" and 1 <= len(a.evidence) <= 5
    assert [e.ref for e in a.evidence] == [f"[{i}]" for i in range(1, len(a.evidence) + 1)]
    assert set(a.citations) <= {e.ref for e in a.evidence} | {k.ref for k in a.knowledge}
    assert a.citations, "the extractive answer cites its evidence"
    d = json.loads(json.dumps(a.to_dict()))
    assert d["selection"]["kept"] == [e.case_id for e in a.evidence]
    assert d["selection"]["params"]["by"] == "similarity" and d["selection"]["reason"]
    assert {"route", "search", "select", "generate", "total"} <= set(d["timings"])


def test_retrieve_and_ask_agree(pipe):
    img = pick_images(data_path(), "microscopy", 1, offset=40)[0]
    r = pipe.retrieve(img, "Is there a white blood cell?")
    a = pipe.ask(img, "Is there a white blood cell?")
    assert [e.case_id for e in a.evidence] == [e.case_id for e in pipe.selector.select(r.candidates).kept]


def test_ask_refuses_non_medical_image(pipe, tmp_path):
    noise = make_nonmedical(tmp_path)["random-noise"]
    with pytest.raises(DomainError, match="random noise"):
        pipe.ask(noise, "What is this?")


def test_ask_is_thread_safe(api_index):
    import ragmed

    fresh = ragmed.Pipeline.from_yaml("multidomain", index=api_index)  # cold: components load under contention
    data = data_path()
    jobs = [(p, q) for dom, q in (("mri", "Is there a tumour?"), ("pathology", "Is this adenocarcinoma?"),
                                  ("dermatology", "Is this a nevus?"), ("microscopy", "Are platelets seen?"))
            for p in pick_images(data, dom, 1, offset=70)]
    expected = [ragmed.Pipeline.from_yaml("multidomain", index=api_index).ask(p, q) for p, q in jobs]
    results: dict[int, object] = {}
    errors = []
    barrier = threading.Barrier(4)

    def worker(w):
        barrier.wait()
        for i in range(w, len(jobs) * 3, 4):
            try:
                results[i] = fresh.ask(*jobs[i % len(jobs)])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == len(jobs) * 3
    for i, a in results.items():
        e = expected[i % len(jobs)]
        assert (a.text, a.domain, [x.case_id for x in a.evidence]) == (e.text, e.domain, [x.case_id for x in e.evidence])


def test_ask_batch_keeps_order_and_errors_in_place(pipe, tmp_path):
    imgs = pick_images(data_path(), "pathology", 2, offset=80)
    items = [(imgs[0], "Is this benign?"), (tmp_path / "missing.png", "Is this benign?"), (imgs[1], "Benign?"),
             (None, "keratin pearls")]
    for workers in (1, 3):
        out = pipe.ask_batch(items, workers=workers)
        assert len(out) == 4 and isinstance(out[1], RagmedError) and "missing.png" in str(out[1])
        assert [o.question for i, o in enumerate(out) if i != 1] == ["Is this benign?", "Benign?", "keratin pearls"]
        assert out[3].domain is None and out[3].image == {}  # text-only question: no routing


def test_ask_manifest(pipe, tmp_path):
    img = pick_images(data_path(), "dermatology", 1, offset=90)[0]
    m = tmp_path / "questions.csv"
    with open(m, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "question"])
        w.writerow(["q1", str(img), "Is this a melanoma?"])
        w.writerow(["q2", "nope.jpg", "Is this a melanoma?"])
    rows = pipe.ask_manifest(m)
    assert [r["id"] for r in rows] == ["q1", "q2"]
    assert rows[0]["answer"]["evidence"] and "error" in rows[1] and "nope.jpg" in rows[1]["error"]
    jl = tmp_path / "q.jsonl"
    jl.write_text(json.dumps({"id": "j1", "question": "keratin pearls"}) + "\n")
    assert pipe.ask_manifest(jl)[0]["answer"]["question"] == "keratin pearls"


def test_rule_selector_from_the_index_select_dir(api_index):
    import numpy as np

    import ragmed
    from ragmed.config import load_pipeline
    from ragmed.select.ltt import calibrate_k, save_calibration

    save_calibration(calibrate_k(np.array([[0, 1]] * 95 + [[1, 0]] * 5), [1, 3], alpha=0.2, delta=0.1),
                     api_index / "select" / "demo.json")
    cfg = load_pipeline("multidomain")
    cfg.select.name, cfg.select.params = "rule", {"calibration": "demo"}
    a = ragmed.Pipeline(cfg, index=api_index).ask(None, "keratin pearls squamous")
    assert a.selection.rule == "rule-ltt" and a.selection.params["k"] == 3 and len(a.evidence) == 3


def test_multidomain_yaml_round_trips_and_builds_its_router():
    import yaml

    from ragmed.config import PipelineConfig, load_pipeline
    from ragmed.domains import build_router

    cfg = load_pipeline("multidomain")
    again = PipelineConfig.from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again.to_dict() == cfg.to_dict()
    names = [d.name for d in cfg.domains]
    assert {"chest-xray", "ct", "mri", "ultrasound", "pathology", "dermatology", "fundus", "microscopy"} <= set(names)
    assert "bm25" in cfg.retrieval.channels and cfg.select.params["by"] == "similarity"
    assert build_router(cfg).order == ("tags", "classifier", "zero-shot")


@pytest.mark.parametrize("question,task", [
    ("Is there a pleural effusion?", "closed"), ("Is/Are there tortuosity in the aorta?", "closed"),
    ("Does/Do the kidneys enhance?", "closed"), ("Is this a CT or an MRI?", "closed"),
    ("Where is the lesion?", "open"), ("What/which organ is shown?", "open"), ("", "report")])
def test_guess_task(question, task):
    from ragmed.pipeline import guess_task

    assert guess_task(question) == task
