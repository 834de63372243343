"""ragmed.align: pairs balanced by answer, the image-replacement metrics of the evaluation, ragmed-vlm's adapter
record (fast: no model is trained here)."""
from __future__ import annotations

import json
import re
from collections import Counter
from types import SimpleNamespace

import pytest

from ragmed.align.evaluate import bootstrap, per_item_flags, unrelated_image
from ragmed.align.pairs import answer_key, balance_pairs


def _pair(i: int, kind: str, chosen: str) -> dict:
    return {"id": f"q{i}:{kind}:0", "kind": kind, "chosen": chosen, "rejected": "x"}


def test_balance_pairs_equalises_yes_and_no_within_each_kind():
    pairs = ([_pair(i, "cross-modality", "No.") for i in range(9)] + [_pair(10 + i, "cross-modality", "Yes.")
                                                                        for i in range(4)]
             + [_pair(20, "cross-modality", "Left side.")]
             + [_pair(30 + i, "helpful", "Yes.") for i in range(3)]
             + [_pair(40 + i, "hallucination", "yes") for i in range(5)] + [_pair(50 + i, "hallucination", "No")
                                                                           for i in range(6)])
    out, report = balance_pairs(pairs, seed=3)
    by = Counter((p["kind"], answer_key(p["chosen"])) for p in out)
    assert by[("cross-modality", "no")] == by[("cross-modality", "yes")] == 4
    assert by[("cross-modality", "left")] == 1  # other answers are kept
    assert by[("hallucination", "yes")] == by[("hallucination", "no")] == 5
    assert not any(p["kind"] == "helpful" for p in out)  # all "yes": nothing to balance it against
    assert report["cross-modality"]["before"] == {"yes": 4, "no": 9, "other": 1}
    assert [p["id"] for p in out] == [p["id"] for p in pairs if p in out]  # the file's order is kept
    again, _ = balance_pairs(pairs, seed=3)
    assert again == out  # seeded


def test_answer_key():
    assert answer_key("No.") == "no" and answer_key(" Yes [1][2]") == "yes" and answer_key("") == ""


def test_image_replacement_metrics_and_their_bootstrap():
    base = dict(task="closed", rag_correct=True, no_rag_correct=True, copy=True, copy_unrelated=False)
    rows = [dict(base, image="a", noise_correct=True, unrelated_correct=False),
            dict(base, image="b", rag_correct=False, noise_correct=True, unrelated_correct=True),
            dict(base, image="b", noise_correct=False, unrelated_correct=False, copy=False)]
    f = per_item_flags(rows[1])
    assert f["image_gain_noise"] == -1.0 and f["accuracy_unrelated"] == 1.0 and f["copy_rate_unrelated"] == 0.0
    res = bootstrap({"base": rows}, n_boot=50, seed=0)["models"]["base"]
    assert res["accuracy_noise"]["value"] == pytest.approx(2 / 3, abs=1e-3)
    assert res["image_gain_noise"]["value"] == pytest.approx(0.0, abs=1e-3)
    assert res["image_gain_unrelated"]["value"] == pytest.approx(1 / 3, abs=1e-3)
    assert res["copy_rate"]["value"] == pytest.approx(2 / 3, abs=1e-3) and res["copy_rate_unrelated"]["value"] == 0.0
    assert res["image_gain_noise"]["ci95"][0] <= res["image_gain_noise"]["value"] <= res["image_gain_noise"]["ci95"][1]


def test_unrelated_image_is_another_organs_and_seeded():
    by_organ = {"CHEST": {"c1.jpg", "c2.jpg"}, "HEAD": {"h1.jpg"}, "ABD": {"a1.jpg", "a2.jpg"}}
    it = SimpleNamespace(organ="CHEST", image="c1.jpg")
    picks = {unrelated_image(by_organ, it, s) for s in range(20)}
    assert picks == {"h1.jpg", "a1.jpg", "a2.jpg"}
    assert unrelated_image(by_organ, it, 7) == unrelated_image(by_organ, it, 7)
    assert unrelated_image({"CHEST": {"c1.jpg"}}, it, 0) is None


def test_ragmed_vlm_names_its_adapter_in_the_model_id(tmp_path):
    from ragmed.generate.vlm.backend import VLMGenerator

    assert VLMGenerator().model_id == "ragmed-vlm:ragmed-vlm"
    (tmp_path / "adapter").mkdir()
    g = VLMGenerator(adapter=str(tmp_path / "adapter"))
    assert g.model_id == "ragmed-vlm:ragmed-vlm+lora:adapter"  # answers of base and aligned are cached apart


def test_adapters_saved_under_one_name_get_different_ids(tmp_path):
    """Every `ragmed align train --out RUN` writes RUN/adapter: the id (and so every answer cache keyed by it) carries a
    digest of the adapter's weights, so a second adapter never reuses the first one's cached answers."""
    from ragmed.generate.vlm.backend import VLMGenerator

    ids = []
    for run, payload in (("a", b"weights of run a"), ("b", b"weights of run b"), ("c", b"weights of run a")):
        d = tmp_path / run / "adapter"
        d.mkdir(parents=True)
        (d / "adapter_model.safetensors").write_bytes(payload)  # only hashed here, never loaded
        ids.append(VLMGenerator(adapter=str(d)).model_id)
    assert all(re.fullmatch(r"ragmed-vlm:ragmed-vlm\+lora:adapter@[0-9a-f]{8}", i) for i in ids), ids
    assert ids[0] != ids[1] and ids[0] == ids[2]  # same weights, same id, wherever they lie
    (tmp_path / "b" / "adapter" / "adapter_model.safetensors").write_bytes(b"retrained")
    assert VLMGenerator(adapter=str(tmp_path / "b" / "adapter")).model_id != ids[1]  # rewritten in place: hashed again


def _align_vlm():
    """eval/align_vlm.py as a module (eval/ is not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("align_vlm", Path(__file__).parent.parent / "eval" / "align_vlm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stratified_cap_keeps_rag_pt_pairs_and_balance():
    mod = _align_vlm()
    pairs = ([_pair(i, "cross-modality", "No." if i % 2 else "Yes.") for i in range(6)]
             + [_pair(10 + i, "hallucination", "No." if i % 2 else "Yes.") for i in range(20)])
    out = mod.stratified_cap(pairs, 12, seed=0)
    by = Counter((p["kind"], answer_key(p["chosen"])) for p in out)
    assert by[("cross-modality", "yes")] == by[("cross-modality", "no")] == 3
    assert by[("hallucination", "yes")] == by[("hallucination", "no")] == 3
    assert json.dumps(out)  # plain records


def test_kind_caps_cap_one_kind_and_keep_its_balance():
    mod = _align_vlm()
    pairs = ([_pair(i, "cross-modality", "No." if i % 2 else "Yes.") for i in range(40)]
             + [_pair(100 + i, "harmful", "No." if i % 2 else "Yes.") for i in range(14)])
    out = mod.kind_caps(pairs, {"cross-modality": 10}, seed=0)
    by = Counter((p["kind"], answer_key(p["chosen"])) for p in out)
    assert by[("cross-modality", "yes")] == by[("cross-modality", "no")] == 5
    assert by[("harmful", "yes")] == by[("harmful", "no")] == 7  # not capped: whole
    assert mod.kind_caps(pairs, {"cross-modality": 10}, seed=0) == out  # seeded


def test_ragmed_vlm_refuses_an_adapter_of_another_base_model(tmp_path):
    from ragmed.errors import GeneratorError
    from ragmed.generate.vlm.backend import VLMGenerator

    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (d / "ragmed_adapter.json").write_text(json.dumps({"base_model": "transformers:other", "base_fingerprint": {
        "model_type": "llava", "vocab_size": 49153, "hidden_size": 576, "num_hidden_layers": 30,
        "embeddings_sha256": "0" * 20}}))
    g = VLMGenerator(adapter=str(d))
    with pytest.raises(GeneratorError, match="another base model"):
        g.warm_up()
