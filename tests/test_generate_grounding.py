"""Generator plumbing that needs no model: prompts, citation grounding, the vote answerer, the registry."""
from __future__ import annotations

import re

import pytest

from ragmed.errors import ConfigError
from ragmed.generate import create_generator, list_generators
from ragmed.generate.chat import (ChatGenerator, ChatResult, clean_answer, list_prompts, load_prompt, parse_prompt,
                                  render_messages)
from ragmed.generate.citations import attach_citations, check_citations, evidence_says, ground, supported
from ragmed.generate.text import finding_terms, normalize_answer, options, qa_pairs, report_asserts, yes_no
from ragmed.types import Evidence, KnowledgeEvidence

VQA_NO = "Q: Is there a pneumothorax? A: no. Q: Is the heart enlarged? A: yes. Q: What organ is shown? A: chest."
VQA_YES = "Q: Is there a pneumothorax present? A: yes. Q: Where is the lesion? A: right upper lobe."
REPORT = "The heart size is normal. No focal consolidation, pleural effusion or pneumothorax. Mild degenerative spine."


def ev(*texts: str) -> list[Evidence]:
    return [Evidence(case_id=f"c{i}", score=1.0 / i, ref=f"[{i}]", text=t) for i, t in enumerate(texts, start=1)]


KN = [KnowledgeEvidence("DOID:1673", "pneumothorax", "DOID", ref="[K1]",
                        text="A pleural disease characterized by air in the pleural space.")]


# --- text helpers ---------------------------------------------------------------------------------------------------
def test_qa_pairs_and_answers():
    assert qa_pairs(VQA_NO) == [("Is there a pneumothorax?", "no"), ("Is the heart enlarged?", "yes"),
                                ("What organ is shown?", "chest")]
    assert normalize_answer("Yes.") == "yes" and normalize_answer("The Left Lung") == "left lung"
    assert yes_no("No [1], there is none") == "no" and yes_no("left lung") is None
    assert options("Is this a CT or an MRI?") == ["ct", "mri"]
    assert options("Is there a mass?") == []
    assert finding_terms("Is there a pleural effusion?") == ["pleural", "effusion"]


@pytest.mark.parametrize("question,text,expected", [
    ("Is there a pneumothorax?", REPORT, "no"),
    ("Is there a pleural effusion?", REPORT, "no"),
    ("Is there a pleural effusion?", "Small left pleural effusion. No pneumothorax.", "yes"),
    ("Is there consolidation?", "Right lower lobe consolidation, but no effusion.", "yes"),
    ("Is the heart enlarged?", REPORT, None),  # "heart size is normal" does not mention enlargement
    ("Is the heart enlarged?", "The heart is enlarged.", "yes"),
    ("Is there a fracture?", REPORT, None),
    ("Is there a pneumothorax?", "Pneumothorax is not seen.", "no"),
])
def test_report_asserts_is_negation_aware(question, text, expected):
    assert report_asserts(question, text) == expected


# --- prompts ----------------------------------------------------------------------------------------------------------
def test_packaged_prompts_load_for_every_task_and_cite():
    assert {"default/closed", "default/open", "default/report"} <= set(list_prompts())
    for task in ("closed", "open", "report"):
        p = load_prompt(task)
        assert "$evidence" in p.user and re.search(r"\[\d\]", p.system)  # the model is shown how to cite
    assert load_prompt("report", "Chest X-ray").path.endswith("chest-xray/report.txt")
    assert load_prompt("report", "dermatology").path.endswith("default/report.txt")


def test_prompt_override_dir_and_bad_prompts(tmp_path):
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct" / "open.txt").write_text("## system\nBe brief.\n## user\n$evidence\nQ: $question\n")
    p = load_prompt("open", "CT", str(tmp_path))
    assert p.system == "Be brief." and p.path.startswith(str(tmp_path))
    assert load_prompt("closed", "CT", str(tmp_path)).path.endswith("default/closed.txt")  # falls back
    with pytest.raises(ConfigError, match="no '## user' section"):
        parse_prompt("## system\nhello\n")
    with pytest.raises(ConfigError, match="unknown task"):
        load_prompt("summary")
    with pytest.raises(ConfigError, match="prompts directory not found"):
        load_prompt("open", None, str(tmp_path / "missing"))


def test_render_messages_is_compact_and_numbered():
    evidence = ev(VQA_NO + " " + " ".join(f"Q: Is there finding {i}? A: no." for i in range(20)), REPORT)
    msgs = render_messages(load_prompt("closed"), "Is there a pneumothorax?", evidence, KN)
    user = msgs[-1]["content"]
    assert msgs[0]["role"] == "system" and user.count("\n[1] ") + user.startswith("[1]") >= 0
    assert "[1] Q: Is there a pneumothorax? A: no." in user and "[2] " in user and "[K1] pneumothorax" in user
    assert "finding 19" not in user  # only the pairs relevant to the question
    assert len(user) < 900


# --- grounding --------------------------------------------------------------------------------------------------------
def test_check_citations_flags_uncited_and_unknown():
    evidence = ev(VQA_NO, REPORT)
    assert check_citations("No [1].", evidence, KN) == (["[1]"], [])
    assert check_citations("No.", evidence, KN) == ([], ["uncited"])
    assert check_citations("No [7].", evidence, KN) == ([], ["uncited", "unknown-citation"])


def test_ground_attaches_citations_to_a_model_that_forgot_them():
    evidence = ev(VQA_NO, REPORT, VQA_YES)
    text, cites, flags = ground("No.", "Is there a pneumothorax?", evidence, KN, task="closed")
    assert cites == ["[1]", "[2]"] and text.startswith("No [1][2].")
    assert "citations-attached" in flags and "unsupported" not in flags
    text, cites, flags = ground("The lesion is in the right upper lobe.", "Where is the lesion?", evidence, KN)
    assert cites == ["[3]"] and "citations-attached" in flags and "unsupported" not in flags


def test_uncited_sentences_given_knowledge_refs_only_are_withheld_too():
    """A model sentence without citations that ragmed would attach to knowledge text alone is held to the same rule
    as one the model cited to knowledge: terms no retrieved case contains are withheld, never passed as cited."""
    evidence = ev(REPORT)
    kn = [KnowledgeEvidence("HP:0002202", "Pleural effusion", "HPO", ref="[K1]",
                            text="Fibromas can grow in all organs, arising from mesenchyme tissue.")]
    text, cites, flags = ground("Fibromas can grow in all organs, arising from mesenchyme tissue.", "", evidence, kn,
                                task="report")
    assert "withheld-knowledge-only" in flags and "[K1]" not in cites and "mesenchyme" not in text
    text, cites, flags = ground("No pleural effusion or pneumothorax. Fibromas arise from mesenchyme tissue.", "",
                                evidence, kn, task="report")
    assert cites == ["[1]"] and "mesenchyme" not in text and "pneumothorax" in text


def test_a_knowledge_only_sentence_that_says_nothing_is_withheld():
    """What SmolLM2-135M left of a demo report: "The term.. [K1]." cites knowledge alone and makes no claim (generic
    words only); the report is then insufficient evidence, not a contentless cited sentence. A knowledge sentence
    whose terms a retrieved case contains stays."""
    evidence = ev(REPORT)
    kn = [KnowledgeEvidence("HP:0002202", "Pleural effusion", "HPO", ref="[K1]",
                            text="An abnormal accumulation of fluid in the pleural cavity.")]
    text, cites, flags = ground("The term.. [K1].", "", evidence, kn, task="report")
    assert "insufficient-evidence" in flags and "withheld-knowledge-only" in flags and cites == []
    text, cites, flags = ground("No pleural effusion [1]. The term.. [K1].", "", evidence, kn, task="report")
    assert cites == ["[1]"] and "term" not in text and "withheld-knowledge-only" in flags
    text, cites, flags = ground("No pleural effusion [1]. Pleural effusion or focal consolidation [K1].", "",
                                evidence, kn, task="report")  # every term is in the case: background, kept
    assert cites == ["[1]", "[K1]"] and "withheld-knowledge-only" not in flags


def test_ground_flags_unsupported_and_invented_refs():
    evidence = ev(VQA_NO, REPORT, VQA_YES)
    # cites evidence that says the opposite: that citation goes, the agreeing case is cited, the departure is said
    text, cites, flags = ground("Yes [2].", "Is there a pneumothorax?", evidence, KN, task="closed")
    assert cites == ["[3]"] and "[2]" not in text and "dropped-disagreeing-citation" in flags
    assert "departs-from-evidence" in flags and "departs from the retrieved evidence" in text
    # cites evidence that has nothing to do with the sentence
    _, _, flags = ground("A large liver mass with calcification [2].", "What is seen?", evidence, KN)
    assert "unsupported" in flags
    # an invented ref is removed and flagged; the answer keeps the rest
    text, cites, flags = ground("No [1][9].", "Is there a pneumothorax?", evidence, KN, task="closed")
    assert "[9]" not in text and cites == ["[1]"] and "unknown-citation" in flags
    # nothing to cite from: stays uncited
    _, cites, flags = ground("Zebra stripes.", "What is seen?", evidence, KN)
    assert cites == [] and "uncited" in flags and "citations-attached" not in flags


def test_supported_and_evidence_says():
    assert evidence_says("Is there a pneumothorax?", VQA_NO) == "no"
    assert evidence_says("is there pneumothorax present", VQA_YES) == "yes"
    assert evidence_says("Is there a pneumothorax?", REPORT) == "no"
    evidence = ev(VQA_NO)
    assert supported("No [1].", "Is there a pneumothorax?", evidence, [], task="closed")
    assert not supported("Yes [1].", "Is there a pneumothorax?", evidence, [], task="closed")
    text, attached = attach_citations("Heart size is normal. Something unrelated entirely.", ev(REPORT), [])
    assert attached and text == "Heart size is normal [1]. Something unrelated entirely."


def test_clean_answer_trims_small_model_habits():
    assert clean_answer("Answer: yes [1]. Because the evidence says so.\nQuestion: next?", "closed") == "yes [1]."
    assert clean_answer("left lung [2]\nQuestion: what else?", "open") == "left lung [2]"
    assert clean_answer("<|im_end|>", "open") == ""


# --- the vote ---------------------------------------------------------------------------------------------------------
def test_vote_over_qa_and_report_evidence_is_cited():
    g = create_generator("vote")
    out = g.generate("Is there a pneumothorax?", ev(VQA_NO, REPORT, VQA_YES), KN, task="closed")
    # [1] (score 1, qa) and [2] (score .5, report, half weight) say no; [3] (score .33) says yes
    assert out.text.startswith("No [1][2].") and out.citations == ["[1]", "[2]"] and out.flags == []
    win, share, votes = g.tally("Is there a pneumothorax?", ev(VQA_YES, VQA_NO), "closed")
    assert win == "yes" and 0.5 < share < 1 and [v.ref for v in votes] == ["[1]", "[2]"]


def test_vote_either_or_and_abstention():
    g = create_generator("vote")
    evidence = ev("Q: Is this a CT or an MRI? A: CT.", "Q: Is this an MRI or a CT? A: mri.", "Q: Is this a CT or MRI? A: ct.")
    out = g.generate("Is this a CT or an MRI?", evidence, [], task="closed")
    assert out.text.startswith("Ct [1][3].") and out.citations == ["[1]", "[3]"]
    none = g.generate("Is there a fracture?", ev(VQA_NO), [], task="closed")
    assert none.insufficient and none.citations == [] and "insufficient-evidence" in none.flags


# --- the shared chat generator, with a scripted stand-in for the model --------------------------------------------------
class ScriptedChat(ChatGenerator):
    """FAKE model for plumbing: returns a fixed reply and records the messages it was sent."""

    id = "scripted"

    def __init__(self, reply: str, **kw):
        super().__init__(**kw)
        self.reply, self.seen = reply, []

    def chat(self, messages, *, max_new_tokens=64, temperature=None, seed=None, stop=None):
        self.seen.append((messages, max_new_tokens))
        return ChatResult(self.reply, finish_reason="stop")


def test_closed_strategy_vote_model_auto():
    evidence = ev(VQA_NO, REPORT, VQA_YES)
    q = "Is there a pneumothorax?"
    model = ScriptedChat("Yes, there is.", closed="model")
    g = model.generate(q, evidence, KN, task="closed")
    assert g.text.startswith("Yes [3].") and g.model == "scripted" and len(model.seen) == 1
    assert model.seen[0][1] == 8  # closed answers get few tokens
    vote = ScriptedChat("Yes.", closed="vote")
    g = vote.generate(q, evidence, KN, task="closed")
    assert g.text.startswith("No [1][2].") and g.model.startswith("vote") and vote.seen == []
    # auto: the vote share (1.25 / 1.58 = 0.79) is under vote_share, so the model is asked
    assert ScriptedChat("Yes.", closed="auto").generate(q, evidence, KN, task="closed").model.startswith("vote")
    auto = ScriptedChat("No.", closed="auto", vote_share=0.9)
    g = auto.generate(q, evidence, KN, task="closed")
    assert len(auto.seen) == 1 and g.text.startswith("No [1][2].")
    # vote with nothing to vote on falls back to the model
    fallback = ScriptedChat("No.", closed="vote")
    fallback.generate("Is there a fracture?", ev(VQA_NO), [], task="closed")
    assert len(fallback.seen) == 1
    with pytest.raises(ConfigError, match="closed="):
        ScriptedChat("x", closed="sometimes")


def test_empty_model_answer_is_flagged():
    g = ScriptedChat("<|im_end|>").generate("What is seen?", ev(REPORT), [], task="open")
    assert g.insufficient and "empty-answer" in g.flags


def test_registry_lists_every_backend():
    assert {"extractive", "vote", "gguf", "transformers", "openai"} <= set(list_generators())
    with pytest.raises(ConfigError, match="unknown generator"):
        create_generator("nope")
    with pytest.raises(ConfigError, match="bad parameters"):
        create_generator("vote", colour="red")
    with pytest.raises(ConfigError, match="base_url"):
        create_generator("openai", base_url="localhost:8000")


def test_unsupported_terms_are_flagged():
    evidence = ev(VQA_YES)
    text, cites, flags = ground("The lesion is in the right upper lobe of the heart [1].", "Where is the lesion?",
                                evidence, [])
    assert cites == ["[1]"] and "unsupported-terms:heart" in flags and "unsupported" not in flags
    _, _, flags = ground("The lesion is located in the right upper lobe [1].", "Where is the lesion?", evidence, [])
    assert not any(f.startswith("unsupported") for f in flags)


def test_generator_modules_import_without_torch():
    import subprocess
    import sys

    code = ("import sys, ragmed.generate, ragmed.generate.chat, ragmed.generate.vote, ragmed.generate.gguf, "
            "ragmed.generate.hf, ragmed.generate.openai_backend, ragmed.serve.openai_server, ragmed.cli.serve; "
            "print([m for m in ('torch', 'transformers', 'openai', 'fastapi') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
