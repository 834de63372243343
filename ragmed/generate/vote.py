"""The vote answerer: no model. For a closed question, each retrieved case casts a vote: the answer it gives to the
most similar question among its "Q: … A: …" pairs (VQA-form evidence), or, for report text, yes/no by the
negation-aware presence of the question's finding. Votes are weighted by the case's retrieval score (relative to the
best) times the question similarity; the answer cites every case that voted for it.

For an open question it votes the same way over the answers of similar indexed questions. Cases that say nothing
abstain; when every case abstains the answer is "insufficient evidence" (flagged), never a guess.
"""
from __future__ import annotations

from dataclasses import dataclass

from ragmed.generate.text import jaccard, normalize_answer, options, qa_pairs, report_asserts
from ragmed.types import Evidence, Generation, KnowledgeEvidence


@dataclass
class Vote:
    ref: str
    answer: str
    weight: float
    how: str  # "qa" (similar indexed question) or "report" (finding in report text)


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
        """One vote per case that answers (a case abstains when it says nothing about the question)."""
        opts = options(question) if task == "closed" else []
        top = max((e.score for e in evidence), default=0.0) or 1.0
        out: list[Vote] = []
        for e in evidence:
            text = e.text or e.excerpt
            rel = max(0.0, e.score) / top if top > 0 else 1.0
            pairs = qa_pairs(text)
            sims = self._similarities(question, [q for q, _ in pairs])
            best = None
            for (q, a), s in sorted(zip(pairs, sims), key=lambda x: -x[1]):
                if s < self.min_similarity:
                    break
                ans = normalize_answer(a)
                if task == "closed" and opts and ans not in opts:
                    continue
                if task == "closed" and not opts and ans not in ("yes", "no"):
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
        n_for, n_all = len(refs), len(votes)
        word = win[:1].upper() + win[1:]
        how = "answer a similar question" if all(v.how == "qa" for v in votes) else "address the question"
        text = (f"{word} {''.join(refs)}. {n_for} of the {n_all} retrieved cases that {how} say "
                f"\"{win}\" (weighted share {share:.2f}).")
        flags = [] if share > 0.5 else ["split-vote"]
        return Generation(text=text, citations=refs, model=self.id, flags=flags)
