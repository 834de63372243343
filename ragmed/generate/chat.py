"""What every chat-model backend (``gguf``, ``transformers``, ``openai``) shares: prompts loaded from files per domain
and task, compact evidence rendering, the closed-question strategy, and the grounding check of the answer.

A backend writes only ``_load()`` and ``chat(messages, ...) -> ChatResult`` (and, to stream, ``stream``). Messages
are in the OpenAI chat format: ``{"role": ..., "content": str | [parts]}`` where a part is ``{"type": "text",
"text": ...}``, ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}`` or, inside ragmed,
``{"type": "image", "image": PIL.Image}``.

Prompt files: ``ragmed/generate/prompts/<domain>/<task>.txt`` (``default/`` when the domain has none); a user's
``prompts_dir`` with the same layout comes first. A file has a ``## system`` and a ``## user`` section (lines before
the first section starting with ``#`` are comments) and the placeholders ``$evidence``, ``$knowledge``,
``$question``, ``$domain``.
"""
from __future__ import annotations

import base64
import functools
import io
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from ragmed.errors import ConfigError, GeneratorError
from ragmed.generate.citations import compact_evidence, ground
from ragmed.types import Evidence, Generation, KnowledgeEvidence

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
TASKS = ("closed", "open", "report")
DEFAULT_MAX_NEW_TOKENS = {"closed": 8, "open": 24, "report": 80}
CLOSED_STRATEGIES = ("model", "vote", "auto")


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str
    path: str


@dataclass
class ChatResult:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # "stop" | "length"


def domain_slug(domain: str | None) -> str:
    d = re.sub(r"x[\s_-]?ray", "xray", (domain or "").lower())
    return re.sub(r"[^a-z0-9]+", "-", d).strip("-") or "default"


def parse_prompt(text: str, path: str = "<prompt>") -> Prompt:
    sections: dict[str, list[str]] = {}
    cur = None
    for line in text.splitlines():
        m = re.match(r"^##\s*(system|user)\s*$", line.strip(), re.I)
        if m:
            cur = m.group(1).lower()
            sections[cur] = []
        elif cur is not None:
            sections[cur].append(line)
    if "user" not in sections:
        raise ConfigError("prompt file has no '## user' section", path=path,
                          remedy="start the user message with a line '## user'")
    user = "\n".join(sections["user"]).strip()
    if "$question" not in user and "${question}" not in user and "$evidence" not in user:
        raise ConfigError("prompt's user section uses neither $question nor $evidence", path=path)
    return Prompt(system="\n".join(sections.get("system", [])).strip(), user=user, path=path)


@functools.lru_cache(maxsize=64)
def load_prompt(task: str, domain: str | None = None, prompts_dir: str | None = None) -> Prompt:
    """The prompt for a task ("closed", "open", "report") and domain: ``prompts_dir`` first, then the packaged ones;
    ``<domain>/<task>.txt`` before ``default/<task>.txt``."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    slug = domain_slug(domain)
    roots = ([Path(prompts_dir)] if prompts_dir else []) + [PROMPTS_DIR]
    if prompts_dir and not Path(prompts_dir).is_dir():
        raise ConfigError("prompts directory not found", path=str(prompts_dir),
                          remedy="set generator.params.prompts_dir to a folder of <domain>/<task>.txt files")
    for root in roots:
        for d in dict.fromkeys((slug, "default")):
            p = root / d / f"{task}.txt"
            if p.is_file():
                return parse_prompt(p.read_text(encoding="utf-8"), str(p))
    raise ConfigError(f"no prompt for task {task!r}", path=str(roots[0]))


def list_prompts() -> list[str]:
    return sorted(f"{p.parent.name}/{p.stem}" for p in PROMPTS_DIR.glob("*/*.txt"))


def render_messages(prompt: Prompt, question: str, evidence: list[Evidence], knowledge: list[KnowledgeEvidence], *,
                    domain: str | None = None, max_evidence: int = 4, evidence_chars: int = 240,
                    max_knowledge: int = 2, knowledge_chars: int = 160) -> list[dict[str, Any]]:
    ev_lines = []
    for e in evidence[:max_evidence]:
        body = compact_evidence(question, e, max_chars=evidence_chars)
        if body:
            ev_lines.append(f"{e.ref} {body}")
    kn_lines = []
    for k in knowledge[:max_knowledge]:
        body = f"{k.name}: {k.text}" if k.text else k.name
        if len(body) > knowledge_chars:
            body = body[: knowledge_chars - 1].rsplit(" ", 1)[0] + "…"
        kn_lines.append(f"{k.ref} {body}")
    values = {"evidence": "\n".join(ev_lines) or "(none)",
              "knowledge": ("Knowledge:\n" + "\n".join(kn_lines)) if kn_lines else "",
              "question": question.strip(), "domain": domain or ""}
    user = Template(prompt.user).safe_substitute(values)
    user = re.sub(r"\n{3,}", "\n\n", user).strip()
    msgs = [{"role": "system", "content": prompt.system}] if prompt.system else []
    msgs.append({"role": "user", "content": user})
    return msgs


# --- images inside messages ---------------------------------------------------------------------------------------
def to_pil(image, max_side: int | None = None):
    """A MedicalImage, numpy array or PIL image → RGB PIL image (longest side at most ``max_side``)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        pil = image.convert("RGB")
    else:
        import numpy as np

        arr = image.to_rgb_uint8() if hasattr(image, "to_rgb_uint8") else np.asarray(image)
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        pil = Image.fromarray(arr).convert("RGB")
    if max_side and max(pil.size) > max_side:
        pil.thumbnail((max_side, max_side))
    return pil


def data_url(pil) -> str:
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_data_url(url: str):
    from PIL import Image

    m = re.match(r"^data:image/[\w.+-]+;base64,(.*)$", url, re.S)
    if not m:
        raise GeneratorError("only data: URLs are accepted for images (no network access)",
                             remedy="send the image as data:image/png;base64,...")
    try:
        return Image.open(io.BytesIO(base64.b64decode(m.group(1)))).convert("RGB")
    except Exception as e:  # PIL raises several types
        raise GeneratorError(f"cannot decode image data URL: {e}") from e


def with_image(messages: list[dict[str, Any]], pil) -> list[dict[str, Any]]:
    """The image goes first in the last user message."""
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] == "user":
            parts = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            m["content"] = [{"type": "image", "image": pil}] + list(parts)
            break
    return out


def message_images(messages: list[dict[str, Any]]) -> list:
    out = []
    for m in messages:
        if isinstance(m.get("content"), list):
            for p in m["content"]:
                if p.get("type") == "image":
                    out.append(p["image"])
                elif p.get("type") == "image_url":
                    url = p["image_url"]["url"] if isinstance(p["image_url"], dict) else p["image_url"]
                    out.append(decode_data_url(url))
    return out


def message_text(content) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or [] if p.get("type") == "text")


def text_only(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": message_text(m.get("content"))} for m in messages]


# --- the shared generator -----------------------------------------------------------------------------------------
class ChatGenerator:
    """Base of the model backends. Parameters (all JSON-able, from ``generator.params``):

    - ``max_new_tokens``: an int, or per task ``{"closed": 8, "open": 24, "report": 80}``;
    - ``temperature`` (0 = greedy, the default: deterministic) and ``seed`` (used when sampling);
    - ``prompts_dir``: a folder of ``<domain>/<task>.txt`` prompt files that override the packaged ones;
    - ``closed``: closed-question strategy: ``model`` (ask the model), ``vote`` (vote over the retrieved cases'
      answers, the model only when no case answers), ``auto`` (the vote when its weighted share ≥ ``vote_share``,
      else the model);
    - ``max_evidence``, ``evidence_chars``, ``max_knowledge``: how much evidence goes into the prompt;
    - ``min_support``: word-overlap share under which a cited sentence is flagged ``unsupported``;
    - ``attach_citations``: attach refs deterministically when the model cites nothing (flagged);
    - ``constrained``: answer a closed question by scoring its choices (yes/no, or the options of an either/or
      question) with the model instead of parsing free text, where the backend can (``choose``: local models).
    """

    id = "chat"
    accepts_images = False

    def __init__(self, *, max_new_tokens: int | dict[str, int] | None = None, temperature: float = 0.0,
                 seed: int = 0, prompts_dir: str | None = None, closed: str = "model", vote_share: float = 0.75,
                 max_evidence: int = 4, evidence_chars: int = 240, max_knowledge: int = 2, min_support: float = 0.3,
                 attach_citations: bool = True, constrained: bool = True, text_encoder=None):
        if closed not in CLOSED_STRATEGIES:
            raise ConfigError(f"generator param closed={closed!r}; one of {', '.join(CLOSED_STRATEGIES)}")
        mnt = dict(DEFAULT_MAX_NEW_TOKENS)
        if isinstance(max_new_tokens, int):
            mnt = {t: max_new_tokens for t in TASKS}
        elif isinstance(max_new_tokens, dict):
            mnt.update({k: int(v) for k, v in max_new_tokens.items()})
        self.max_new_tokens = mnt
        self.temperature = float(temperature)
        self.seed = int(seed)
        self.prompts_dir = str(prompts_dir) if prompts_dir else None
        self.closed = closed
        self.vote_share = float(vote_share)
        self.max_evidence, self.evidence_chars, self.max_knowledge = int(max_evidence), int(evidence_chars), int(max_knowledge)
        self.min_support = float(min_support)
        self.attach = bool(attach_citations)
        self.constrained = bool(constrained)
        self.text_encoder = text_encoder
        self._lock = threading.RLock()
        self._ready = False

    # backends override these three
    def _load(self) -> None:
        pass

    def chat(self, messages: list[dict[str, Any]], *, max_new_tokens: int = 64, temperature: float | None = None,
             seed: int | None = None, stop: list[str] | None = None) -> ChatResult:
        raise NotImplementedError

    def stream(self, messages: list[dict[str, Any]], **kw) -> Iterator[str]:
        """Text pieces as they are generated (backends that can stream override this)."""
        yield self.chat(messages, **kw).text

    @property
    def model_id(self) -> str:
        return self.id

    def warm_up(self) -> None:
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self._load()
                    self._ready = True

    def warm_up_async(self) -> threading.Thread:
        """Start loading the model in a background thread (e.g. while retrieval runs); ``generate`` waits for it
        through the same lock. Returns the thread."""
        th = threading.Thread(target=self.warm_up, name=f"warm-up {self.id}", daemon=True)
        th.start()
        return th

    def messages_for(self, question: str, evidence: list[Evidence], knowledge: list[KnowledgeEvidence], *,
                     image=None, domain: str | None = None, task: str = "open") -> list[dict[str, Any]]:
        prompt = load_prompt(task, domain, self.prompts_dir)
        msgs = render_messages(prompt, question, evidence, knowledge, domain=domain, max_evidence=self.max_evidence,
                               evidence_chars=self.evidence_chars, max_knowledge=self.max_knowledge)
        if image is not None and self.accepts_images:
            msgs = with_image(msgs, to_pil(image, getattr(self, "image_max_side", None)))
        return msgs

    def _vote(self, question: str, evidence: list[Evidence], knowledge: list[KnowledgeEvidence]) -> Generation | None:
        from ragmed.generate.vote import VoteGenerator

        voter = VoteGenerator(text_encoder=self.text_encoder)
        win, share, _ = voter.tally(question, evidence, "closed")
        if win is None or (self.closed == "auto" and share < self.vote_share):
            return None
        g = voter.generate(question, evidence, knowledge, task="closed")
        g.model = f"vote (closed={self.closed}; {self.model_id} not asked)"
        return g

    def generate(self, question: str, evidence: list[Evidence], knowledge: list[KnowledgeEvidence], *,
                 image=None, domain: str | None = None, task: str = "open") -> Generation:
        task = task if task in TASKS else "open"
        if task == "closed" and self.closed in ("vote", "auto"):
            g = self._vote(question, evidence, knowledge)
            if g is not None:
                return g
        self.warm_up()
        msgs = self.messages_for(question, evidence, knowledge, image=image, domain=domain, task=task)
        choices = closed_choices(question) if task == "closed" and self.constrained else []
        if choices and hasattr(self, "choose"):
            pick, _ = self.choose(msgs, choices)
            res = ChatResult(text=pick[:1].upper() + pick[1:] + ".")
        else:
            res = self.chat(msgs, max_new_tokens=self.max_new_tokens[task])
        text = clean_answer(res.text, task, question)
        if not text:
            return Generation(text="The model gave no answer.", citations=[], model=self.model_id,
                              flags=["empty-answer", "uncited"], insufficient=True)
        text, citations, flags = ground(text, question, evidence, knowledge, task=task, attach=self.attach,
                                        min_support=self.min_support)
        if res.finish_reason == "length" and task != "closed":
            flags.append("truncated")
        return Generation(text=text, citations=citations, model=self.model_id, flags=flags)


def closed_choices(question: str) -> list[str]:
    """The answers a closed question allows: its either/or options, else yes/no."""
    from ragmed.generate.text import options

    return options(question) or ["yes", "no"]


_ROLE_LEAK = re.compile(r"(<\|im_end\|>|<\|im_start\|>|<\|endoftext\|>|\n\s*(?:question|evidence|user|assistant)\s*:).*",
                        re.I | re.S)


def clean_answer(text: str, task: str, question: str = "") -> str:
    """Trim what small models add after the answer (a new "Question:", chat markers); a closed answer keeps its
    first sentence."""
    t = _ROLE_LEAK.sub("", text or "").strip()
    t = re.sub(r"^(answer|a)\s*:\s*", "", t, flags=re.I).strip()
    if task == "closed" and t:
        return re.split(r"(?<=[.!?])\s+|\n", t, maxsplit=1)[0].strip()
    return t
