"""Every evaluation metric against values computed by hand on tiny inputs (no model, no index)."""
from __future__ import annotations

import math
import socket

import pytest

from ragmed.eval.normalize import normalize_answer
from ragmed.eval.report import bleu_scores, evaluate_reports, finding_scores, read_reports, rouge_l
from ragmed.eval.results import make_result, validate_result
from ragmed.eval.retrieval import (MRR_DEPTH, excluded_ids, is_relevant, parse_ks, rank_and_filter, ranking_metrics,
                                   values_match)
from ragmed.eval.vqa import item_metrics, select_items, short_answer, token_scores
from ragmed.types import Answer


# --------------------------------------------------------------------------------------------- relevance
@pytest.mark.parametrize("a,b,expected", [
    (" Lung ", "lung", True),           # trimmed, case-folded
    ("CHEST", "chest", True),
    ("", "", False),                    # empty never matches
    (None, None, False),
    ("  ", " ", False),
    ("a;b", "B; c", True),              # ';' lists match on overlap
    ("a;b", "c;d", False),
    ("head", "Head;Neck", True),
    ("abd", "abdomen", False),          # no prefix matching
])
def test_values_match(a, b, expected):
    assert values_match(a, b) is expected


def test_relevance_needs_every_match_column():
    q = {"organ": "CHEST", "view": "PA"}
    assert is_relevant(q, {"organ": "chest", "view": "pa"}, ["organ", "view"])
    assert not is_relevant(q, {"organ": "chest", "view": "lateral"}, ["organ", "view"])
    assert is_relevant(q, {"organ": "chest", "view": "lateral"}, ["organ"])
    assert not is_relevant(q, {"organ": "chest"}, [])  # no column named: nothing is relevant
    assert not is_relevant({"organ": ""}, {"organ": ""}, ["organ"])


def test_exclusion_self_and_same_column():
    cases = {"a": {"patient": "p1"}, "b": {"patient": " P1"}, "c": {"patient": ""}, "d": {"patient": "p2;p3"},
             "q": {"patient": "p9"}}
    assert excluded_ids({"patient": "p1"}, cases, self_ids={"q"}, exclude_same=["patient"]) == {"q", "a", "b"}
    assert excluded_ids({"patient": "p3"}, cases, self_ids=set(), exclude_same=["patient"]) == {"d"}
    # an empty query value excludes nobody (empty never matches)
    assert excluded_ids({"patient": ""}, cases, self_ids={"q"}, exclude_same=["patient"]) == {"q"}
    assert excluded_ids({"patient": "p1"}, cases, self_ids={"q"}) == {"q"}


def test_rank_and_filter_removes_before_cut():
    ranked = ["self", "a", "x", "a", "y", "z"]
    assert rank_and_filter(ranked, {"self"}, 2) == ["a", "x"]
    assert rank_and_filter(ranked, {"self", "x"}, 3) == ["a", "y", "z"]


# --------------------------------------------------------------------------------------------- ranking metrics
def test_ranking_metrics_hand_computed():
    m = ranking_metrics([True, False, True, False, False], n_relevant=3, ks=[1, 3, 5])
    assert m["precision@1"] == 1.0 and m["recall@1"] == pytest.approx(1 / 3) and m["hit@1"] == 1.0
    assert m["precision@3"] == pytest.approx(2 / 3) and m["recall@3"] == pytest.approx(2 / 3)
    assert m["precision@5"] == pytest.approx(2 / 5) and m["recall@5"] == pytest.approx(2 / 3)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)  # ranks 1 and 3
    idcg3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # 3 relevant exist
    assert m["ndcg@3"] == pytest.approx(dcg / idcg3) == pytest.approx(0.703918, abs=1e-6)
    assert m["ndcg@5"] == pytest.approx(dcg / idcg3)
    assert m["mrr"] == 1.0


def test_ranking_metrics_late_hit_and_ideal_capped_by_k():
    m = ranking_metrics([False, False, True], n_relevant=1, ks=[1, 3])
    assert m["hit@1"] == 0.0 and m["precision@1"] == 0.0 and m["recall@1"] == 0.0
    assert m["hit@3"] == 1.0 and m["recall@3"] == 1.0 and m["precision@3"] == pytest.approx(1 / 3)
    assert m["ndcg@3"] == pytest.approx(0.5)  # 1/log2(4) over an ideal of 1
    assert m["mrr"] == pytest.approx(1 / 3)
    # 10 relevant, k=2, both retrieved: the ideal DCG is over min(k, n_relevant) = 2 items -> nDCG 1
    m = ranking_metrics([True, True], n_relevant=10, ks=[2])
    assert m["ndcg@2"] == pytest.approx(1.0) and m["recall@2"] == pytest.approx(0.2)
    # precision divides by K even when fewer than K results came back
    m = ranking_metrics([True], n_relevant=1, ks=[5])
    assert m["precision@5"] == pytest.approx(0.2)


def test_mrr_only_looks_at_top_100():
    rel = [False] * MRR_DEPTH + [True]
    assert ranking_metrics(rel, 1, [1])["mrr"] == 0.0
    rel = [False] * (MRR_DEPTH - 1) + [True]
    assert ranking_metrics(rel, 1, [1])["mrr"] == pytest.approx(1 / 100)


def test_ranking_metrics_refuses_no_relevant():
    with pytest.raises(ValueError):
        ranking_metrics([False], 0, [1])


def test_exclusion_changes_the_metric_as_by_hand():
    """The query itself ranks first; excluded before the top-1 cut, the relevant case moves up to rank 1."""
    cases = {"q": {"organ": "chest"}, "r": {"organ": "chest"}, "n": {"organ": "head"}}
    excl = excluded_ids(cases["q"], cases, self_ids={"q"})
    relevant = {c for c, v in cases.items() if c not in excl and is_relevant(cases["q"], v, ["organ"])}
    assert relevant == {"r"}
    ranked = rank_and_filter(["q", "n", "r"], excl, 100)
    m = ranking_metrics([c in relevant for c in ranked], len(relevant), [1, 2])
    assert ranked == ["n", "r"] and m["hit@1"] == 0.0 and m["hit@2"] == 1.0 and m["mrr"] == 0.5


def test_parse_ks():
    assert parse_ks(None) == [1, 5, 10]
    assert parse_ks("10,5") == [5, 10]
    with pytest.raises(ValueError):
        parse_ks("0,5")


# --------------------------------------------------------------------------------------------- VQA
@pytest.mark.parametrize("text,norm", [
    ("Yes!", "yes"), ("The left lung.", "left lung"), ("Two  lesions", "2 lesions"), ("twenty-one", "21"),
    ("2.5 cm", "2.5 cm"), ("An X-ray", "x ray"), ("first rib", "1st rib"), ("one hundred", "100"), ("", ""),
])
def test_normalize_answer(text, norm):
    assert normalize_answer(text) == norm


def test_short_answer_forms():
    extractive = ('yes [1] — the answer given for the most similar indexed question ("is there a mass?").\n'
                  "is the heart enlarged? → no [2]")
    assert short_answer(Answer(question="q", text=extractive, evidence=[])) == "yes"
    assert short_answer(Answer(question="q", text="Left upper lobe [1]. The evidence shows ...", evidence=[])) == \
        "Left upper lobe"
    assert short_answer(Answer(question="q", text="No. The lungs are clear [1].", evidence=[])) == "No"
    assert short_answer(Answer(question="q", text="Insufficient evidence: nothing relevant was retrieved.",
                               evidence=[], insufficient_evidence=True)) == ""
    a = Answer(question="q", text="long text [1]", evidence=[])
    a.short_answer = "pleural effusion"  # a generator that sets a short answer wins
    assert short_answer(a) == "pleural effusion"
    assert short_answer({"answer": "axial [1] — ...", "short_answer": None}) == "axial"


def test_token_scores_hand_computed():
    s = token_scores("left lung", "the left upper lobe")  # gold [left, upper, lobe]; pred [left, lung]
    assert s["recall"] == pytest.approx(1 / 3) and s["precision"] == pytest.approx(1 / 2)
    assert s["f1"] == pytest.approx(0.4)
    s = token_scores("", "right")
    assert s == {"recall": 0.0, "precision": 0.0, "f1": 0.0}
    s = token_scores("fluid fluid", "fluid")  # multiset: one gold token, two predicted
    assert s["recall"] == 1.0 and s["precision"] == 0.5
    with pytest.raises(ValueError):
        token_scores("x", "the")


def test_item_metrics_closed_and_open():
    assert item_metrics("Two", "2", "CLOSED ".strip().casefold()) == {"accuracy": 1.0, "closed_accuracy": 1.0}
    assert item_metrics("no", "yes", "closed") == {"accuracy": 0.0, "closed_accuracy": 0.0}
    m = item_metrics("left lung", "The left upper lobe", "open")
    assert m["accuracy"] == 0.0 and m["open_recall"] == pytest.approx(1 / 3) and m["open_f1"] == pytest.approx(0.4)
    assert item_metrics("Axial", "axial.", "open") == {"accuracy": 1.0, "open_recall": 1.0, "open_f1": 1.0}


def test_select_items_is_seeded_and_ordered():
    items = list(range(100))
    a, b = select_items(items, 10, seed=3), select_items(items, 10, seed=3)
    assert a == b and a == sorted(a) and len(set(a)) == 10
    assert select_items(items, 10, seed=4) != a
    assert select_items(items, None, seed=3) == items


# --------------------------------------------------------------------------------------------- result format
def test_make_result_means_and_breakdowns():
    per_item = [{"closed_accuracy": 1.0, "accuracy": 1.0}, {"closed_accuracy": 0.0, "accuracy": 0.0},
                {"open_recall": 0.5, "open_f1": 0.25, "accuracy": 0.0}]
    groups = {"by_question_type": ["PRES", "PRES", "POS"], "by_organ": ["CHEST", "HEAD", None],
              "by_domain": ["all", "all", "all"]}
    r = make_result("vqa", per_item, groups, [{"id": "x", "reason": "missing image"}], {"a": 1}, 1.5)
    assert r["metrics"] == {"accuracy": pytest.approx(1 / 3), "closed_accuracy": 0.5, "open_f1": 0.25,
                            "open_recall": 0.5}
    assert r["n"] == 3 and r["n_by_metric"] == {"accuracy": 3, "closed_accuracy": 2, "open_f1": 1, "open_recall": 1}
    assert r["breakdown"]["by_question_type"]["PRES"] == {"n": 2, "closed_accuracy": 0.5, "accuracy": 0.5}
    assert r["breakdown"]["by_organ"] == {"CHEST": {"n": 1, "closed_accuracy": 1.0, "accuracy": 1.0},
                                          "HEAD": {"n": 1, "closed_accuracy": 0.0, "accuracy": 0.0}}
    assert validate_result(r) == []
    bad = dict(r, metrics={"mrr": 1.5})
    assert any("mrr" in p for p in validate_result(bad))


# --------------------------------------------------------------------------------------------- report metrics
def test_bleu_hand_computed():
    # unigram: clipped matches the, cat -> 2/3; brevity penalty exp(1 - 6/3)
    s = bleu_scores(["the cat sat"], ["the cat is on the mat"])
    assert s["bleu_1"] == pytest.approx(math.exp(-1) * 2 / 3, rel=1e-6)
    same = bleu_scores(["no acute cardiopulmonary abnormality seen"], ["No acute cardiopulmonary abnormality seen."])
    assert all(v == pytest.approx(1.0) for v in same.values()) and len(same) == 4
    # bigrams: pred "a b c d", ref "a b x d": 1-gram 3/4, 2-gram 1/3 (a b); BLEU-2 = sqrt(3/4 * 1/3)
    s = bleu_scores(["a b c d"], ["a b x d"])
    assert s["bleu_2"] == pytest.approx(math.sqrt(0.75 / 3), rel=1e-6)


def test_rouge_l_hand_computed():
    assert rouge_l(["a b c d"], ["a c d e"]) == [pytest.approx(0.75)]  # LCS a c d: P = R = 3/4
    assert rouge_l(["x"], ["y"]) == [0.0]


def test_finding_scores_hand_computed():
    pred = [{("C1", True), ("C2", False)}]
    ref = [{("C1", True), ("C2", True)}]
    s = finding_scores(pred, ref)
    assert s["finding_precision"] == 0.5 and s["finding_recall"] == 0.5 and s["finding_f1"] == 0.5
    assert s["finding_present_precision"] == 1.0 and s["finding_present_recall"] == 0.5
    assert s["finding_present_f1"] == pytest.approx(2 / 3)
    assert finding_scores([set()], [set()])["finding_f1"] == 0.0


class FakeLinker:
    """Plumbing-only stand-in for the knowledge graph's linker (a fake, named as such): a concept per known word,
    negated when the word follows 'no '."""

    id = "fake-linker"
    WORDS = {"effusion": "C1", "pneumothorax": "C2", "cardiomegaly": "C3"}

    def link(self, text):
        import re
        from types import SimpleNamespace

        out = []
        for m in re.finditer(r"(no )?(effusion|pneumothorax|cardiomegaly)", text.lower()):
            out.append(SimpleNamespace(id=self.WORDS[m.group(2)], negated=bool(m.group(1))))
        return out


def test_evaluate_reports_offline_with_pairing(tmp_path, monkeypatch):
    pred = tmp_path / "pred.jsonl"
    ref = tmp_path / "ref.csv"
    pred.write_text('{"id": "1", "report": "Cardiomegaly. No effusion."}\n{"id": "2", "report": "No pneumothorax."}\n'
                    '{"id": "9", "report": "orphan"}\n')
    ref.write_text('id,report\n1,"Cardiomegaly. Small effusion."\n2,"No pneumothorax."\n')

    def no_network(*a, **k):
        raise AssertionError("a report metric tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    r = evaluate_reports(pred, ref, linker=FakeLinker())
    assert validate_result(r) == [] and r["n"] == 2
    assert r["skipped"] == [{"id": "9", "reason": "no reference report with this id"}]
    # findings: pred {C3+, C1-} {C2-}; ref {C3+, C1+} {C2-}: tp 2 of 3 predicted, 3 referenced
    assert r["metrics"]["finding_f1"] == pytest.approx(2 / 3)
    assert r["metrics"]["finding_present_f1"] == pytest.approx(2 / 3)  # pred {C3}, ref {C3, C1}
    assert r["metrics"]["rouge_l"] == pytest.approx((rouge_l(["Cardiomegaly. No effusion."],
                                                             ["Cardiomegaly. Small effusion."])[0] + 1.0) / 2)
    assert "meteor" in r["unavailable_metrics"] and "meteor" not in r["metrics"]


def test_evaluate_reports_without_graph_says_why(tmp_path):
    pred = tmp_path / "p.txt"
    pred.write_text("no acute disease\n")
    ref = tmp_path / "r.txt"
    ref.write_text("no acute disease\n")
    r = evaluate_reports(pred, ref, kg_path=tmp_path / "no-such-graph")
    assert r["metrics"]["bleu_1"] == pytest.approx(1.0)
    assert "finding_f1" in r["unavailable_metrics"] and "finding_f1" not in r["metrics"]


def test_read_reports_formats(tmp_path):
    p = tmp_path / "r.json"
    p.write_text('{"train": [{"id": "a", "report": "x"}], "test": [{"id": "b", "report": "y"}]}')
    assert read_reports(p) == [("a", "x"), ("b", "y")]
    from ragmed.errors import CorpusError

    p.write_text('[{"id": "a", "nope": 1}]')
    with pytest.raises(CorpusError, match="none of the text fields"):
        read_reports(p)


def test_finding_f1_with_the_real_linker(tmp_path):
    """The bundled knowledge graph's linker, negation-aware: 'No pleural effusion' is an absent finding."""
    from ragmed.eval.report import load_linker

    kg, why = load_linker()
    if kg is None:
        pytest.skip(why)
    pred = tmp_path / "p.txt"
    ref = tmp_path / "r.txt"
    pred.write_text("No pleural effusion. Cardiomegaly.\n")
    ref.write_text("Pleural effusion. Cardiomegaly.\n")
    r = evaluate_reports(pred, ref, linker=kg)
    # pred {effusion absent, cardiomegaly present}; ref {effusion present, cardiomegaly present}
    assert r["metrics"]["finding_precision"] == 0.5 and r["metrics"]["finding_recall"] == 0.5
    assert r["metrics"]["finding_present_precision"] == 1.0 and r["metrics"]["finding_present_recall"] == 0.5
