"""The vote answerer: no model. For a closed question each retrieved case that speaks to the question's *finding*
casts a vote:

- VQA-form evidence ("Q: … A: …"): the answer of its most similar indexed question, when that question asks about
  the same finding (:func:`ragmed.generate.text.same_finding`: "Is there a pleural effusion?" never votes on "Is there
  a pneumothorax?"), or, for an either/or question, offers one of the options;
- report text: "yes" / "no" when the report asserts / denies the finding, negation and hedging scoped to the finding
  (:func:`ragmed.text.negation.finding_status`); a report that does not mention it, or only hedges, abstains.

Which cases vote, and how much: the cases that match the *image*. When the evidence carries image-channel scores
(``image-image``, else ``image-report``), a case's weight is its image similarity relative to the best one, and a case
found only through its text (the question-report or BM25 channels: the few reports that happen to mention the finding)
does not vote; without an image, the fused retrieval score relative to the best. A QA vote is further weighted by the
question similarity, a report vote by 0.5.

The answer cites only the cases that voted for it, says how many disagreed (never citing them), and carries the
*evidence level* (:func:`evidence_level`): the net weighted support for the winning answer per retrieved case,
(W_win − W_others) / n, in [0, 1]. :func:`abstain_below` turns an answer whose level is under the calibrated
threshold (:data:`DEFAULT_MIN_LEVEL`, ``eval/safety_calibrate.py``) into "insufficient evidence". Cases that say
nothing abstain; when every case abstains the answer is "insufficient evidence" (flagged), never a guess.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from ragmed.generate.text import jaccard, normalize_answer, options, qa_pairs, report_asserts, same_finding, yes_no
from ragmed.types import Evidence, Generation, KnowledgeEvidence

IMAGE_CHANNELS = ("image-image", "image-report")
CALIBRATION_FILE = Path(__file__).with_name("abstention.json")


def _default_min_level() -> float:
    """The threshold calibrated on the index half of the VQA-RAD split (``eval/safety_calibrate.py`` writes
    ``ragmed/generate/abstention.json``); 0 (never abstain on the level) when the file is absent."""
    try:
        return float(json.loads(CALIBRATION_FILE.read_text())["min_level"])
    except (OSError, ValueError, KeyError):
        return 0.0


DEFAULT_MIN_LEVEL = _default_min_level()


@dataclass
class Vote:
    ref: str
    answer: str
    weight: float
    how: str  # "qa" (similar indexed question about the same finding) or "report" (finding in report text)


def relevance(evidence: list[Evidence]) -> list[float]:
    """Each case's voting weight before the question: its image similarity relative to the best (cases without an
    image-channel score get 0), or, when no case carries one, its fused score relative to the best."""
    for ch in IMAGE_CHANNELS:
        sims = [e.channels.get(ch) for e in evidence]
        if any(s is not None for s in sims):
            top = max((s for s in sims if s is not None), default=0.0)
            return [0.0 if s is None or top <= 0 else max(0.0, s) / top for s in sims]
    top = max((e.score for e in evidence), default=0.0)
    return [max(0.0, e.score) / top if top > 0 else 1.0 for e in evidence]


class VoteGenerator:
    id = "vote"

    def __init__(self, min_similarity: float = 0.5, text_encoder=None, use_reports: bool = True):
        self.min_similarity = float(min_similarity)
        self.text_encoder = text_encoder
        self.use_reports = bool(use_reports)

    def warm_up(self) -> None:
        pass

    def _similarities(self, question: str, qs: list[str]) -> list[float]:
        if not qs:
            return []
        lex = [jaccard(question, q) for q in qs]
        if self.text_encoder is None:
            return lex
        v = self.text_encoder.encode_texts([question] + qs)
        cos = v[1:] @ v[0]
        return [float(max(lx, c)) for lx, c in zip(lex, cos)]

    def votes(self, question: str, evidence: list[Evidence], task: str = "closed") -> list[Vote]:
        """One vote per case that answers (a case abstains when it says nothing about the question's finding, or
        did not match the image)."""
        opts = options(question) if task == "closed" else []
        out: list[Vote] = []
        for e, rel in zip(evidence, relevance(evidence)):
            if rel <= 0:
                continue
            text = e.text or e.excerpt
            pairs = qa_pairs(text)
            sims = self._similarities(question, [q for q, _ in pairs])
            best = None
            for (q, a), s in sorted(zip(pairs, sims), key=lambda x: -x[1]):
                if s < self.min_similarity:
                    break
                ans = normalize_answer(a)
                if task == "closed" and opts and ans not in opts:
                    continue
                if task == "closed" and not opts and (ans not in ("yes", "no") or not same_finding(question, q)):
                    continue
                best = Vote(e.ref, ans, rel * s, "qa")
                break
            if best is None and self.use_reports and task == "closed" and not opts:
                said = report_asserts(question, text)
                if said is not None:
                    best = Vote(e.ref, said, rel * 0.5, "report")
            if best is not None:
                out.append(best)
        return out

    def tally(self, question: str, evidence: list[Evidence], task: str = "closed") -> tuple[str | None, float, list[Vote]]:
        """(winning answer or None, its share of the vote weight, the votes)."""
        votes = self.votes(question, evidence, task)
        if not votes:
            return None, 0.0, votes
        totals: dict[str, float] = {}
        first: dict[str, int] = {}
        for i, v in enumerate(votes):
            totals[v.answer] = totals.get(v.answer, 0.0) + v.weight
            first.setdefault(v.answer, i)
        win = max(totals, key=lambda a: (totals[a], -first[a]))
        return win, totals[win] / (sum(totals.values()) or 1.0), votes

    def generate(self, question: str, evidence: list[Evidence], knowledge: list[KnowledgeEvidence], *,
                 image=None, domain: str | None = None, task: str = "closed") -> Generation:
        task = "closed" if task == "closed" else "open"
        win, share, votes = self.tally(question, evidence, task)
        if win is None:
            return Generation(text="Insufficient evidence: none of the retrieved cases answers this question.",
                              citations=[], model=self.id, flags=["insufficient-evidence", "uncited"],
                              insufficient=True)
        refs = [v.ref for v in votes if v.answer == win and v.ref]
        against = [v for v in votes if v.answer != win]
        n_for, n_all = len(refs), len(votes)
        word = win[:1].upper() + win[1:]
        how = "answer a similar question" if all(v.how == "qa" for v in votes) else "address the question"
        text = (f"{word} {''.join(refs)}. {n_for} of the {n_all} retrieved cases that {how} say "
                f"\"{win}\" (weighted share {share:.2f})")
        if against:
            others = sorted({v.answer for v in against})
            text += f"; {len(against)} say " + " or ".join(f'"{o}"' for o in others) + " and are not cited"
        text += "."
        flags = [] if share > 0.5 else ["split-vote"]
        return Generation(text=text, citations=refs, model=self.id, flags=flags)


def evidence_level(question: str, evidence: list[Evidence], *, answer: str | None = None, text_encoder=None,
                   task: str = "closed") -> tuple[str | None, float]:
    """(the evidence's answer, its level): the net weighted support per retrieved case, (W_answer − W_others) / n,
    for ``answer`` (default: the vote's winner). 0 when nothing votes; negative when the evidence says otherwise."""
    if not evidence:
        return None, 0.0
    votes = VoteGenerator(text_encoder=text_encoder).votes(question, evidence, task)
    totals: dict[str, float] = {}
    for v in votes:
        totals[v.answer] = totals.get(v.answer, 0.0) + v.weight
    if answer is None:
        if not totals:
            return None, 0.0
        answer = max(totals, key=totals.get)
    answer = normalize_answer(answer)
    w = totals.get(answer, 0.0)
    return answer, (w - (sum(totals.values()) - w)) / len(evidence)


def abstain_below(g: Generation, question: str, evidence: list[Evidence], *, task: str, text_encoder=None,
                  min_level: float | None = None) -> Generation:
    """The pipeline's abstention step for closed answers: below the calibrated evidence level (``min_level``, default
    :data:`DEFAULT_MIN_LEVEL`) the answer becomes "insufficient evidence", flagged ``below-evidence-level`` and
    ``withheld:<answer>`` (what it would have said, for risk–coverage evaluation). Open answers and answers already
    insufficient pass unchanged."""
    if g.insufficient:
        return g
    if "insufficient-evidence" in g.flags:  # ground() withheld everything the model wrote
        return replace(g, insufficient=True)
    if task != "closed":
        return g
    threshold = DEFAULT_MIN_LEVEL if min_level is None else float(min_level)
    first = g.text.split("[", 1)[0]
    said = yes_no(first) or normalize_answer(first.split(".")[0]) or None
    _, level = evidence_level(question, evidence, answer=said, text_encoder=text_encoder)
    if level >= threshold:
        return g
    text = (f"Insufficient evidence: the retrieved cases do not support an answer strongly enough (evidence level "
            f"{level:.2f} < {threshold:.2f}, calibrated). ragmed does not answer from evidence this weak.")
    return replace(g, text=text, citations=[], insufficient=True,
                   flags=["insufficient-evidence", "below-evidence-level", f"withheld:{said or ''}"])


def own_case_first(fused: list[Evidence], own_ids: set[str], channels: dict[str, list]) -> list[Evidence]:
    """The rule for the query's own case (an image that is itself in the index): it is kept as evidence, first.
    Evaluation excludes it with ``exclude_hashes`` (then ``own_ids`` is empty). A case in ``fused`` moves to the
    front with the top score; one that fusion cut is brought back from the channel hits that found it."""
    if not own_ids:
        return fused
    top = max((e.score for e in fused), default=0.0)
    own = [e for e in fused if e.case_id in own_ids]
    if not own:
        for ch, hits in channels.items():
            for h in hits:
                if h.case_id in own_ids and all(e.case_id != h.case_id for e in own):
                    own.append(Evidence(case_id=h.case_id, score=0.0, domain=h.domain, image=h.image,
                                        channels={ch: round(float(h.score), 6)}))
    for e in own:
        e.score = round(top + 1e-6, 6)
        e.metadata = {**e.metadata, "own_case": "true"}
    rest = [e for e in fused if e.case_id not in own_ids]
    return (own + rest)[: max(len(fused), len(own))]
