"""One module for answer normalisation, with its two documented uses (scoring vs matching inside evidence)."""
from __future__ import annotations

import ragmed.eval.normalize as eval_norm
import ragmed.generate.text as gen_text
from ragmed.text.normalize import answer_key, normalize_answer


def test_old_import_paths_are_the_same_functions():
    assert eval_norm.normalize_answer is normalize_answer
    assert gen_text.normalize_answer is answer_key


def test_the_two_uses_differ_where_documented():
    assert normalize_answer("Two  lesions.") == "2 lesions" and answer_key("Two  lesions.") == "two lesions"
    assert normalize_answer("Present") == "present" and answer_key("Present") == "yes"
    assert normalize_answer("a mass in the lung") == "mass in lung" and answer_key("a mass in the lung") == "mass in the lung"
    for text in ("Yes!", "No.", "The left lung"):  # where both agree
        assert normalize_answer(text) == answer_key(text)
