"""``ragmed eval`` end to end on a tiny real index (real FAISS, real MiniLM, the classic image encoder) built here:
the JSON schema, the exclusion rules on a real index, the predictions file and the plots."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ragmed.cli import main
from ragmed.eval.results import validate_result

ORGANS = ["CHEST", "HEAD", "ABD"]
QUESTIONS = {
    "CHEST": [("Is there a pleural effusion?", "yes", "CLOSED", "PRES"), ("Which lung is affected?", "left", "OPEN", "POS")],
    "HEAD": [("Is there a midline shift?", "no", "CLOSED", "PRES"), ("What imaging modality is this?", "ct", "OPEN", "MODALITY")],
    "ABD": [("Is the liver enlarged?", "yes", "CLOSED", "SIZE"), ("Where is the mass?", "right kidney", "OPEN", "POS")],
}


def _png(path: Path, organ: int, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    base = [xx, yy, np.sqrt((xx - 0.5) ** 2 + (yy - 0.5) ** 2)][organ]
    img = np.clip(base + 0.03 * rng.standard_normal((64, 64)), 0, 1)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Nine images (3 per organ) with VQA-RAD style questions; img_dup.png is a byte copy of img_0.png."""
    root = tmp_path_factory.mktemp("eval-cli")
    images = root / "images"
    images.mkdir()
    rows, qid = [], 0
    for i in range(9):
        organ = ORGANS[i % 3]
        _png(images / f"img_{i}.png", i % 3, seed=i)
        for q, a, at, qt in QUESTIONS[organ]:
            qid += 1
            rows.append({"qid": qid, "image_name": f"img_{i}.png", "image_organ": organ, "question": q, "answer": a,
                         "answer_type": at, "question_type": qt, "phrase_type": "freeform"})
    (images / "img_dup.png").write_bytes((images / "img_0.png").read_bytes())
    rows.append({"qid": 999, "image_name": "img_dup.png", "image_organ": "CHEST", "question": "Is this a chest film?",
                 "answer": "yes", "answer_type": "CLOSED", "question_type": "MODALITY"})
    data = root / "qa.json"
    data.write_text(json.dumps(rows))
    # its own pipeline, so the test does not follow changes of the default one: real MiniLM, the classic image
    # descriptor (its own space: image-image only), the extractive answerer, no knowledge graph
    pipeline = root / "eval-test.yaml"
    pipeline.write_text("name: eval-test\nencoders:\n  text: {name: minilm}\n  image: {name: classic}\n"
                        "retrieval:\n  top_k: 10\n  channels: [image-image, question-report]\n"
                        "select:\n  name: fixed\n  params: {k: 5}\ngenerator:\n  name: extractive\n"
                        "knowledge:\n  path: null\n")
    index = root / "index"
    r = CliRunner().invoke(main, ["index", "build", "--corpus", str(data), "--format", "vqa-rad", "--images",
                                  str(images), "--pipeline", str(pipeline), "--out", str(index), "-q"])
    assert r.exit_code == 0, r.output
    return {"root": root, "images": images, "data": data, "index": index, "rows": rows}


def _run(args):
    r = CliRunner().invoke(main, ["eval", *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


def test_retrieval_image_image_schema_and_self_exclusion(tiny, tmp_path):
    out, preds = tmp_path / "ret.json", tmp_path / "ret.jsonl"
    _run(["retrieval", "--index", str(tiny["index"]), "--queries", str(tiny["data"]), "--task", "image-image",
          "--match", "image_organ", "--k", "1,3", "--images", str(tiny["images"]), "--format", "vqa-rad",
          "--predictions", str(preds), "--out", str(out), "-q"])
    res = json.loads(out.read_text())
    assert validate_result(res) == []
    assert res["schema"] == 1 and res["task"] == "retrieval"
    assert set(res["metrics"]) == {"precision@1", "recall@1", "hit@1", "ndcg@1", "precision@3", "recall@3", "hit@3",
                                   "ndcg@3", "mrr"}
    # image tasks read the VQA file as a corpus: one query per image
    assert res["n"] == 10 and res["skipped"] == []
    assert set(res["breakdown"]["by_organ"]) == set(ORGANS)
    assert res["config"]["index"]["n_cases"] == 10 and res["config"]["encoders"]["image"]
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(lines) == res["n"]
    by_id = {x["id"]: x for x in lines}
    for case, got in by_id.items():
        assert case not in got["evidence_ids"]  # the query's own case never comes back
        assert {"id", "prediction", "gold", "correct", "evidence_ids"} <= set(got)
    # img_0 and img_dup hold the same bytes (same content hash), so each excludes the other too
    assert "img_dup" not in by_id["img_0"]["evidence_ids"] and "img_0" not in by_id["img_dup"]["evidence_ids"]
    # CHEST cases: img_0, img_3, img_6, img_dup. img_0 excludes itself and img_dup -> 2 relevant left;
    # img_3 excludes only itself -> 3 relevant (img_0, img_6, img_dup)
    assert by_id["img_0"]["n_relevant"] == 2 and by_id["img_0"]["excluded"] == 2
    assert by_id["img_3"]["n_relevant"] == 3 and by_id["img_3"]["excluded"] == 1
    assert set(by_id["img_0"]["gold"]) == {"img_3", "img_6"}
    # the metrics are the means of per-query values computed from these rankings
    hits3 = [any(c in set(x["gold"]) for c in x["evidence_ids"][:3]) for x in lines]
    assert res["metrics"]["hit@3"] == pytest.approx(sum(hits3) / len(hits3))


def test_retrieval_question_report_exclude_same_and_plots(tiny, tmp_path):
    out = tmp_path / "q.json"
    _run(["retrieval", "--index", str(tiny["index"]), "--queries", str(tiny["data"]), "--task", "question-report",
          "--match", "image_organ", "--exclude-same", "image_organ", "--images", str(tiny["images"]),
          "--out", str(out), "-q"])
    res = json.loads(out.read_text())
    # every relevant case shares the query's organ, and --exclude-same removes exactly those: nothing left to find
    assert res["n"] == 0 and len(res["skipped"]) == len(tiny["rows"])
    assert all("no relevant case" in s["reason"] for s in res["skipped"])
    out2 = tmp_path / "q2.json"
    _run(["retrieval", "--index", str(tiny["index"]), "--queries", str(tiny["data"]), "--task", "question-report",
          "--match", "image_organ", "--images", str(tiny["images"]), "--out", str(out2), "-q"])
    res2 = json.loads(out2.read_text())
    assert validate_result(res2) == [] and res2["n"] == len(tiny["rows"])
    assert set(res2["breakdown"]["by_question_type"]) == {"PRES", "POS", "MODALITY", "SIZE"}
    pngs = sorted(p.name for p in tmp_path.glob("q2.*.png"))
    assert pngs and all((tmp_path / p).stat().st_size > 1000 for p in pngs)


def test_retrieval_bad_task_combination_is_one_line(tiny, tmp_path):
    r = CliRunner().invoke(main, ["eval", "retrieval", "--index", str(tiny["index"]), "--queries", str(tiny["data"]),
                                  "--task", "question-image", "--match", "image_organ", "--images", str(tiny["images"]),
                                  "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 1 and "shared space" in r.output and "Traceback" not in r.output


def test_vqa_excludes_own_image_by_default(tiny, tmp_path):
    out, preds = tmp_path / "vqa.json", tmp_path / "vqa.jsonl"
    _run(["vqa", "--index", str(tiny["index"]), "--data", str(tiny["data"]), "--images", str(tiny["images"]),
          "--predictions", str(preds), "--out", str(out), "-q"])
    res = json.loads(out.read_text())
    assert validate_result(res) == [] and res["task"] == "vqa"
    assert res["n"] == len(tiny["rows"])
    assert {"closed_accuracy", "open_recall", "open_f1", "accuracy"} <= set(res["metrics"])
    assert res["n_by_metric"]["closed_accuracy"] == sum(r["answer_type"] == "CLOSED" for r in tiny["rows"])
    assert res["config"]["generator"]["name"] == "extractive" and res["config"]["exclude_query_image"] is True
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    row_of = {str(r["qid"]): r for r in tiny["rows"]}
    for x in lines:
        assert Path(row_of[x["id"]]["image_name"]).stem not in x["evidence_ids"]
    assert "img_dup" not in next(x for x in lines if x["id"] == "1")["evidence_ids"]
    assert list(tmp_path.glob("vqa.by_question_type.*.png"))


def test_vqa_including_own_image_answers_from_it(tiny, tmp_path):
    """With the question's own case allowed, the extractive answerer finds the identical indexed question."""
    out, preds = tmp_path / "vqa_in.json", tmp_path / "vqa_in.jsonl"
    _run(["vqa", "--index", str(tiny["index"]), "--data", str(tiny["data"]), "--images", str(tiny["images"]),
          "--include-query-image", "--limit", "8", "--seed", "1", "--predictions", str(preds), "--out", str(out),
          "-q", "--no-plots"])
    res = json.loads(out.read_text())
    assert res["n"] == 8 and res["config"]["limit"] == 8
    # the answers in this toy set are the same for every image of an organ, so the answer is right either way
    assert res["metrics"]["accuracy"] == pytest.approx(1.0)


def test_report_cli(tmp_path):
    pred = tmp_path / "pred.txt"
    ref = tmp_path / "ref.txt"
    pred.write_text("heart size is normal. no effusion.\nlungs are clear.\n")
    ref.write_text("heart size is normal. no pleural effusion.\nthe lungs are clear.\n")
    out = tmp_path / "rep.json"
    r = _run(["report", "--pred", str(pred), "--ref", str(ref), "--out", str(out)])
    res = json.loads(out.read_text())
    assert validate_result(res) == [] and res["n"] == 2
    assert {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l"} <= set(res["metrics"])
    assert 0 < res["metrics"]["bleu_4"] < res["metrics"]["bleu_1"] < 1
    assert "METEOR" in r.output
