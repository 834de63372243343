"""The ``ragmed-answerer`` generator backend: a small Med-VQA classifier that reads the image gives the short answer;
the retrieved cases are cited only where they agree (issue S's rules, :func:`ragmed.generate.citations.ground`).

- closed questions: the classifier's choice among the question's options (yes/no, or an either/or question's
  options). A yes/no answer pools the classifier with the image-matched evidence on the log-odds scale,
  ``logit P(yes) = logit P_clf(yes) + beta * log((W_yes + alpha) / (W_no + alpha))`` (W: the vote weights of the
  retrieved cases that assert / deny the finding, :meth:`ragmed.generate.vote.VoteGenerator.votes`); beta, alpha and
  the closed-confidence threshold are fitted on the dev slice of the training part
  (``eval/fit_evidence_pooling.py`` → ``evidence_pooling.json``; beta = 0 or no file: the classifier alone);
  ``ground()`` cites the retrieved cases that say the same, never one that says the opposite, and when the
  answer departs from the majority of the cases that answer it says so and flags ``departs-from-evidence``;
  an image unlike all of the answerer's training images (:mod:`ragmed.generate.answerer.image_domain`: further from
  them than any training image from its nearest neighbour, e.g. a 28-pixel MedMNIST X-ray) is not read by the
  classifier: the vote over the image-matched evidence answers (flags ``answerer-fallback:image-outside-training``,
  ``image-distance:<d>``; "insufficient evidence" when no case speaks to the finding);
- open questions: the classifier's in-vocabulary answer when its probability is at least ``min_open_confidence``
  (calibrated on the training part's dev slice, stored in the weights' ``config.json``), cited where a case contains
  it; otherwise the ``fallback`` generator (default ``gguf``: SmolLM2 reading the retrieved text) answers;
- no image (a text-only question), or report generation: the fallback (closed: the vote over the retrieved cases).

Every answer carries the flag ``answer-confidence:<p>``; :meth:`AnswererGenerator.abstain` (called by the pipeline in
place of the evidence-level rule) turns a closed answer under ``min_closed_confidence`` into "insufficient evidence".

    generator:
      name: ragmed-answerer
      params: {fallback: gguf, fallback_params: {closed: vote}}
"""
from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from ragmed.types import Evidence, Generation, KnowledgeEvidence

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_NAME = "ragmed-answerer"
POOLING_FILE = Path(__file__).with_name("evidence_pooling.json")


def pooling_params() -> dict[str, float]:
    """beta, alpha and min_closed_confidence of the evidence pooling (``evidence_pooling.json``, written by
    eval/fit_evidence_pooling.py); beta 0 (the classifier alone) when the file is absent or unreadable."""
    import json

    try:
        d = json.loads(POOLING_FILE.read_text())
        return {"beta": float(d["beta"]), "alpha": float(d["alpha"]),
                "min_closed_confidence": float(d["min_closed_confidence"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {"beta": 0.0, "alpha": 1.0}


def pool_yes(p_yes: float, w_yes: float, w_no: float, beta: float, alpha: float) -> float:
    """P(yes) pooled from the classifier's ``p_yes`` and the evidence's vote weights for / against the finding:
    logit P = logit p_yes + beta * log((w_yes + alpha) / (w_no + alpha)). No votes (w = 0) leave p_yes unchanged."""
    import math

    p = min(max(float(p_yes), 1e-6), 1 - 1e-6)
    z = math.log(p / (1 - p)) + float(beta) * math.log((w_yes + alpha) / (w_no + alpha))
    return 1.0 / (1.0 + math.exp(-z))


def shipped_path() -> Path:
    return WEIGHTS_DIR / DEFAULT_NAME


def confidence_of(g: Generation) -> float | None:
    for f in g.flags:
        if f.startswith("answer-confidence:"):
            try:
                return float(f.split(":", 1)[1])
            except ValueError:
                return None
    return None


class AnswererGenerator:
    """Parameters: ``weights`` (a weights directory written by eval/train_answerer.py; default the shipped one),
    ``fallback`` / ``fallback_params`` (the generator for open questions the classifier is unsure of, text-only
    questions and reports), ``fallback_in_child`` (default false; true: a model fallback that an open question starts
    loading while retrieval runs is loaded and run in a child process, :mod:`ragmed.generate.answerer.child`; false:
    in a thread of this process), ``min_open_confidence`` / ``min_closed_confidence`` (default: the weights' calibration,
    or the pooling's dev calibration when pooling is on), ``evidence_beta`` / ``evidence_alpha`` (the pooling of
    yes/no answers with the evidence; default ``evidence_pooling.json``; ``evidence_beta: 0`` = the classifier
    alone), ``image_domain`` (default true: a closed question about an image unlike the answerer's training images
    is answered from the evidence, :mod:`ragmed.generate.answerer.image_domain`), ``threads`` (torch threads, 1),
    ``text_encoder`` (the question encoder; default ragmed's ``minilm``)."""

    id = "ragmed-answerer"

    def __init__(self, weights: str | None = None, *, fallback: str | None = "gguf",
                 fallback_params: dict[str, Any] | None = None, min_open_confidence: float | None = None,
                 min_closed_confidence: float | None = None, evidence_beta: float | None = None,
                 evidence_alpha: float | None = None, image_domain: bool = True, threads: int | None = 1,
                 text_encoder=None, fallback_in_child: bool = False):
        self.weights = Path(weights) if weights else shipped_path()
        self.fallback_name = fallback
        self.fallback_params = dict(fallback_params or {})
        self._min_open = min_open_confidence
        self._min_closed = min_closed_confidence
        pool = pooling_params()
        self.evidence_beta = float(pool["beta"] if evidence_beta is None else evidence_beta)
        self.evidence_alpha = float(pool["alpha"] if evidence_alpha is None else evidence_alpha)
        # the pooled answers' threshold was calibrated with the pooling it goes with; explicit beta → weights' own
        self._pool_min_closed = pool.get("min_closed_confidence") if evidence_beta is None else None
        self.image_domain = bool(image_domain)
        self._domain = None  # (ImageDomain | None,) once loaded
        self.threads = threads
        self.text_encoder = text_encoder
        self._model = None
        self._fallback = None
        self.fallback_in_child = bool(fallback_in_child)
        self._child = None  # the fallback in a child process (ChildGenerator), once an open question started it
        self._lock = threading.Lock()
        self._fallback_lock = threading.Lock()

    # --- loading ---------------------------------------------------------------------------------------------
    @property
    def model(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from ragmed.generate.answerer.model import Answerer

                    self._model = Answerer(self.weights)
        return self._model

    @property
    def min_open_confidence(self) -> float:
        if self._min_open is not None:
            return float(self._min_open)
        return float(self.model.config.get("calibration", {}).get("min_open_confidence", 0.5))

    @property
    def min_closed_confidence(self) -> float:
        if self._min_closed is not None:
            return float(self._min_closed)
        if self.evidence_beta > 0 and self._pool_min_closed is not None:
            return float(self._pool_min_closed)
        return float(self.model.config.get("calibration", {}).get("min_closed_confidence", 0.0))

    def _encoder(self):
        if self.text_encoder is None:
            from ragmed.encoders import create_encoder

            self.text_encoder = create_encoder("minilm")
        return self.text_encoder

    def fallback(self):
        if self._fallback is None and self.fallback_name:
            with self._fallback_lock:  # one instance, also when a warm-up thread and an answer ask at once
                if self._fallback is None:
                    from ragmed.generate import create_generator

                    params = dict(self.fallback_params)
                    if self.fallback_name == "vote":
                        params.setdefault("text_encoder", None)
                    self._fallback = create_generator(self.fallback_name, **params)
        return self._fallback

    def warm_up(self) -> None:
        _ = self.model
        self._encoder()
        fb = self._child or self.fallback()
        if fb is not None:
            fb.warm_up()

    @property
    def _ready(self) -> bool:
        """Whether the fallback model (the slow part to load, e.g. SmolLM2) is loaded; the pipeline starts
        :meth:`warm_up_async` for open questions when it is not."""
        fb = self._fallback
        return not self.fallback_name or self._child is not None or (fb is not None and getattr(fb, "_ready", True))

    def _start_child(self) -> bool:
        """Start the fallback in a child process when it is a model generator not loaded yet (see
        :mod:`ragmed.generate.answerer.child`); False when it is not one, or the child cannot start."""
        if not self.fallback_in_child or self._child is not None:
            return self._child is not None
        fb = self.fallback()
        if fb is None or not hasattr(fb, "warm_up_async") or getattr(fb, "_ready", True):
            return False
        import logging
        import pickle

        from ragmed.generate.answerer.child import ChildGenerator

        with self._fallback_lock:
            if self._child is None:
                try:
                    self._child = ChildGenerator(self.fallback_name, self.fallback_params)
                except (OSError, pickle.PicklingError, TypeError, AttributeError) as e:
                    logging.getLogger(__name__).warning("fallback in a child process unavailable (%s); loading it "
                                                        "in this process", e)
                    self.fallback_in_child = False
                    return False
        return True

    def warm_up_async(self) -> threading.Thread:
        """Start loading the fallback generator's model while retrieval runs (an open question may need it): in a
        child process (``fallback_in_child``; the returned thread waits for it to be ready) or in a background
        thread; the classifier itself loads in milliseconds on first use. Returns the thread."""
        def load() -> None:
            if self._child is not None:
                try:
                    self._child.warm_up()
                except Exception:  # noqa: BLE001 - generate() raises the child's error where an answer needs it
                    pass
                return
            fb = self.fallback()
            if fb is not None:
                fb.warm_up()

        self._start_child()
        th = threading.Thread(target=load, name=f"warm-up {self.id} fallback", daemon=True)
        th.start()
        return th

    @property
    def model_id(self) -> str:
        return f"ragmed-answerer:{self.model.config.get('name', self.weights.name)}"

    # --- answering -------------------------------------------------------------------------------------------
    def probabilities(self, question: str, image) -> Any:
        """The classifier's answer distribution for one question about one image (``MedicalImage``)."""
        import numpy as np

        from ragmed.generate.hf import torch_threads

        q = np.asarray(self._encoder().encode_texts([question]), dtype=np.float32)
        arr = self.model.letterbox(image.pixels)[None] if self.model.image_branch else None
        with torch_threads(self.threads):
            return self.model.probabilities(q, arr)[0]

    def predict_open(self, question: str, image) -> tuple[str, float, str | None]:
        """(answer, probability, image-level question type or None) of an open question: with image-level heads in
        the weights (``image_level.json``), a question the type classifier reads as "what organ / which modality /
        which plane is this?" gets the heads' label in the vocabulary's words; any other, the most probable
        vocabulary answer."""
        il = self.model.image_level
        if il is not None:
            import numpy as np

            from ragmed.generate.hf import torch_threads

            q = np.asarray(self._encoder().encode_texts([question]), dtype=np.float32)
            with torch_threads(self.threads):
                emb = self.model.embeddings(self.model.letterbox(image.pixels)[None])
            hit = il.answers(q, emb)[0]
            if hit is not None:
                return hit
        a, p = self.predict(question, image, "open")
        return a, p, None

    def predict(self, question: str, image, task: str = "closed") -> tuple[str | None, float]:
        """(answer, probability) — closed: the most probable allowed choice (renormalised over the choices); open:
        the most probable vocabulary answer. (None, 0) when the vocabulary knows none of a closed question's
        choices."""
        import numpy as np

        from ragmed.generate.answerer.model import choose
        from ragmed.generate.chat import closed_choices

        p = self.probabilities(question, image)
        if task == "closed":
            return choose(p, self.model.index, closed_choices(question))
        j = int(np.argmax(p))
        return self.model.vocab[j], float(p[j])

    def outside_training(self, image) -> float | None:
        """The query image's nearest-neighbour distance to the answerer's training images when it lies beyond all of
        them (further than any training image from its nearest neighbour), else None; None too when the check is off
        (``image_domain: false``, no reference file, or a retrained tower the reference does not describe)."""
        if not self.image_domain or not self.model.image_branch:
            return None
        if self._domain is None:
            with self._lock:
                if self._domain is None:
                    from ragmed.generate.answerer.image_domain import load_domain

                    self._domain = (load_domain(self.model),)
        dom = self._domain[0]
        if dom is None:
            return None
        from ragmed.generate.hf import torch_threads

        with torch_threads(self.threads):
            d = dom.distance(self.model, image.pixels)
        return d if d > dom.max_distance else None

    def predict_closed(self, question: str, image, evidence: list[Evidence]) -> tuple[str | None, float, str | None]:
        """(answer, confidence, pooling note) of a closed question: a yes/no question pools the classifier's P(yes)
        with the image-matched evidence (:func:`pool_yes`), an either/or question is the classifier's choice."""
        from ragmed.generate.chat import closed_choices
        from ragmed.generate.vote import VoteGenerator

        idx = self.model.index
        if sorted(closed_choices(question)) != ["no", "yes"] or "yes" not in idx or "no" not in idx \
                or self.evidence_beta <= 0:
            a, c = self.predict(question, image, "closed")
            return a, c, None
        p = self.probabilities(question, image)
        py = float(p[idx["yes"]] / max(float(p[idx["yes"]] + p[idx["no"]]), 1e-12))
        w = {"yes": 0.0, "no": 0.0}
        for v in VoteGenerator(text_encoder=None).votes(question, evidence, "closed"):
            if v.answer in w:
                w[v.answer] += v.weight
        pp = pool_yes(py, w["yes"], w["no"], self.evidence_beta, self.evidence_alpha)
        note = f"evidence-pooled:{py:.2f}->{pp:.2f}" if w["yes"] or w["no"] else None
        return ("yes", pp, note) if pp >= 0.5 else ("no", 1 - pp, note)

    def _fallback_generate(self, question, evidence, knowledge, image, domain, task, why: str) -> Generation:
        fb = self._child or self.fallback()
        if fb is None and task == "closed":
            from ragmed.generate.vote import VoteGenerator

            fb = VoteGenerator()
        if fb is None:
            return Generation(text="Insufficient evidence: ragmed-answerer cannot answer this question and no "
                                   "fallback generator is configured.", citations=[], model=self.id,
                              flags=["insufficient-evidence", "uncited"], insufficient=True)
        g = fb.generate(question, evidence, knowledge, image=image, domain=domain, task=task)
        return replace(g, flags=list(g.flags) + [f"answerer-fallback:{why}"])

    def generate(self, question: str, evidence: list[Evidence], knowledge: list[KnowledgeEvidence], *,
                 image=None, domain: str | None = None, task: str = "closed") -> Generation:
        from ragmed.generate.citations import ground

        task = task if task in ("closed", "open", "report") else "open"
        if task == "report" or image is None:
            return self._fallback_generate(question, evidence, knowledge, image, domain, task,
                                           "report" if task == "report" else "no-image")
        note = None
        if task == "closed":
            far = self.outside_training(image)
            if far is not None:  # the classifier would guess outside its domain: the image-matched evidence answers
                from ragmed.generate.vote import VoteGenerator

                g = VoteGenerator(text_encoder=self._encoder()).generate(question, evidence, knowledge, task=task)
                return replace(g, flags=list(g.flags) + ["answerer-fallback:image-outside-training",
                                                         f"image-distance:{far:.2f}"])
            ans, p, note = self.predict_closed(question, image, evidence)
        else:
            ans, p, itype = self.predict_open(question, image)
            note = f"image-level:{itype.lower()}" if itype else None
        if ans is None:
            return self._fallback_generate(question, evidence, knowledge, image, domain, task, "options-unknown")
        if task == "open" and (p < self.min_open_confidence or ans in ("yes", "no")):
            g = self._fallback_generate(question, evidence, knowledge, image, domain, task, "low-confidence")
            return replace(g, flags=list(g.flags) + [f"answerer-guess:{ans}:{p:.2f}"])
        word = ans[:1].upper() + ans[1:]
        text, cites, flags = ground(f"{word}.", question, evidence, knowledge, task=task)
        flags = [f for f in flags if f != "citations-attached"]
        if not cites:
            flags.append("no-agreeing-case")
            text = (text.rstrip() + " No retrieved case states this answer; it rests on ragmed-answerer reading "
                    "the image.")
        return Generation(text=text, citations=cites, model=self.model_id,
                          flags=flags + ([note] if note else []) + [f"answer-confidence:{p:.3f}"])

    def abstain(self, g: Generation, question: str, evidence: list[Evidence], *, task: str,
                min_confidence: float | None = None) -> Generation:
        """The abstention step for this backend's own closed answers: under the calibrated confidence the answer
        becomes "insufficient evidence" (flags ``below-confidence``, ``withheld:<answer>``). Fallback answers go
        through the evidence-level rule (:func:`ragmed.generate.vote.abstain_below`)."""
        from ragmed.generate.vote import abstain_below

        conf = confidence_of(g)
        if conf is None:
            return abstain_below(g, question, evidence, task=task)
        if g.insufficient or task != "closed":
            return g
        threshold = self.min_closed_confidence if min_confidence is None else float(min_confidence)
        if conf >= threshold:
            return g
        said = g.text.split("[", 1)[0].split(".", 1)[0].strip().lower()
        return replace(g, text=(f"Insufficient evidence: ragmed-answerer is not confident enough to answer "
                                f"(confidence {conf:.2f} < {threshold:.2f}, calibrated)."), citations=[],
                       insufficient=True, flags=["insufficient-evidence", "below-confidence", f"withheld:{said}"])


__all__ = ["AnswererGenerator", "shipped_path", "confidence_of"]
