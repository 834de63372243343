"""Generator backends: cold and warm latency, CPU threads, and which closed-question strategy answers best.

    nice -n 10 python eval/bench_generate.py                       # everything (~5-10 min on 2 busy cores)
    python eval/bench_generate.py --skip-accuracy --warm-n 3       # latency only

Writes eval/results/bench_generate.json (with the command line and the machine).

- **cold**: a fresh Python process from start to its first answer (interpreter + imports + model load + one
  answer), split into import / load / first-answer seconds, with the process's CPU seconds beside the wall time (on a
  shared, busy machine wall time is inflated by waiting for a core; the load average is recorded); for ``gguf`` once with an empty model cache (the one-time
  GGUF → safetensors conversion) and then with the cache filled, which is what every later ``ragmed ask`` pays.
- **warm**: per-answer latency of a loaded generator over the same fixed evidence (p50 / p90 over ``--warm-n``
  answers per task), for gguf with 1 and 2 torch threads, for the ``openai`` backend talking to ``ragmed serve openai
  --generator gguf`` on 127.0.0.1 (the HTTP overhead on top of the same model), for ``vote`` and ``extractive``, and
  for the FAKE tiny LLaVA (plumbing only: its numbers say nothing about a real VLM).
- **closed-question strategy**: VQA-RAD ``train.json`` split by image (seed 0): 80 % of images form the evidence
  pool (one case per image, its Q–A pairs), closed questions about the other 20 % are answered from the top-5 cases
  retrieved by question→case similarity (MiniLM), by: the majority answer of the pool, the vote, the model
  (SmolLM2, constrained yes/no or option choice), and ``auto`` (the vote when its share ≥ 0.75, else the model).
  Accuracy with n per cell. The generator is compared on fixed evidence here; the full pipeline table (image
  retrieval, selectors) is eval/vqa_* and ``ragmed eval``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("RAGMED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "eval" / "results"

from ragmed.types import Evidence, KnowledgeEvidence  # noqa: E402

EVIDENCE = [
    Evidence("c1", 0.05, "[1]", "Q: Is there a pneumothorax? A: no. Q: Is the heart enlarged? A: yes. "
                                "Q: What organ is shown? A: chest."),
    Evidence("c2", 0.04, "[2]", "The heart size is normal. No focal consolidation, pleural effusion or pneumothorax. "
                                "Degenerative changes of the thoracic spine."),
    Evidence("c3", 0.03, "[3]", "Q: Where is the lesion? A: right upper lobe. Q: Is there a mass? A: yes."),
    Evidence("c4", 0.02, "[4]", "Right upper lobe mass with spiculated margins. No pleural effusion."),
]
KNOWLEDGE = [KnowledgeEvidence("DOID:1673", "pneumothorax", "DOID", ref="[K1]",
                               text="A pleural disease characterized by air in the pleural space.")]
QUESTIONS = {"closed": ["Is there a pneumothorax?", "Is there a mass?", "Is the heart enlarged?"],
             "open": ["Where is the lesion?", "What organ is shown?", "What abnormality is seen?"]}

COLD_SNIPPET = r"""
import json, sys, time
t0 = time.perf_counter()
from ragmed.generate import create_generator
from ragmed.types import Evidence
t1 = time.perf_counter()
g = create_generator(sys.argv[1], **json.loads(sys.argv[2]))
g.warm_up()
t2 = time.perf_counter()
ev = [Evidence("c1", 0.05, "[1]", "Q: Is there a pneumothorax? A: no."),
      Evidence("c2", 0.04, "[2]", "The heart size is normal. No pleural effusion or pneumothorax.")]
out = g.generate("Is there a pneumothorax?", ev, [], task="closed")
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_answer_s": t3 - t2, "answer": out.text}))
"""


def pct(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"p50": round(statistics.median(xs), 3), "p90": round(xs[min(len(xs) - 1, int(0.9 * len(xs)))], 3),
            "n": len(xs)}


def cold(name: str, params: dict, env: dict | None = None) -> dict:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", COLD_SNIPPET, name, json.dumps(params)], capture_output=True,
                       text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    return {"process_wall_s": round(wall, 3), "process_cpu_s": round(cpu, 3), **{k: round(v, 3) if isinstance(v, float) else v for k, v in rec.items()}}


def warm(g, n: int, tasks=("closed", "open")) -> dict:
    g.warm_up()
    g.generate(QUESTIONS["closed"][0], EVIDENCE, KNOWLEDGE, task="closed")  # first call outside the timing
    out = {}
    for task in tasks:
        times, cpus, answers = [], [], []
        for i in range(n):
            q = QUESTIONS[task][i % len(QUESTIONS[task])]
            t, c = time.perf_counter(), time.process_time()
            a = g.generate(q, EVIDENCE, KNOWLEDGE, task=task)
            times.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
            if i < len(QUESTIONS[task]):
                answers.append({"q": q, "answer": a.text, "citations": a.citations, "flags": a.flags})
        # wall time, and this process's CPU time (all its threads): on a busy machine the CPU time is closer to
        # what an idle machine's wall time would be (the HTTP backend's CPU time is the client's only)
        out[task] = {**pct(times), "cpu_p50": round(statistics.median(cpus), 3), "examples": answers}
    return out


def start_server(args: list[str]):
    from ragmed.serve.process import start_openai_server

    return start_openai_server(args, timeout=300)


# --- closed-question strategies on VQA-RAD ---------------------------------------------------------------------------
def closed_accuracy(limit_model: int, k: int = 5, seed: int = 0) -> dict:
    from ragmed.corpus.vqa import read_qa
    from ragmed.encoders import create_encoder
    from ragmed.generate import create_generator
    from ragmed.generate.text import normalize_answer

    items = read_qa(DATA / "vqa-rad" / "train.json")
    images = sorted({it.image for it in items})
    random.Random(seed).shuffle(images)
    pool_imgs = set(images[: int(0.8 * len(images))])
    pool = [it for it in items if it.image in pool_imgs]
    evalq = [it for it in items if it.image not in pool_imgs and it.answer_type == "closed"]
    by_img: dict[str, list] = {}
    for it in pool:
        by_img.setdefault(it.image, []).append(it)
    cases = [(img, " ".join(f"Q: {q.question} A: {q.answer}." for q in qs)) for img, qs in by_img.items()]
    enc = create_encoder("minilm")
    cv = enc.encode_texts([t for _, t in cases])
    qv = enc.encode_texts([it.question for it in evalq])
    sims = qv @ cv.T
    majority = Counter(normalize_answer(it.answer) for it in pool if it.answer_type == "closed").most_common(1)[0][0]

    def evidence_for(i: int) -> list[Evidence]:
        top = sims[i].argsort()[::-1][:k]
        return [Evidence(cases[j][0], float(sims[i, j]), f"[{r}]", cases[j][1]) for r, j in enumerate(top, start=1)]

    def first_answer(text: str) -> str:
        import re

        return normalize_answer(re.sub(r"\[K?\d+\].*$", "", text.split(".")[0]))

    # one model answer per question; the strategies are derived from it and the vote's tally (no double runs)
    rows = {"majority": [], "vote (abstain = wrong)": [], "vote, where it answers": [], "model": [],
            "vote, else model (closed=vote)": [], "auto (vote if share >= 0.75, else model)": [],
            "vote (abstain = wrong), model subset": [], "majority, model subset": [], "always yes": []}
    vote = create_generator("vote")
    model = create_generator("gguf", closed="model")
    n_model = min(limit_model, len(evalq))
    model_idx = set(random.Random(seed).sample(range(len(evalq)), n_model))
    t_model = []
    for i, it in enumerate(evalq):
        gold = normalize_answer(it.answer)
        ev = evidence_for(i)
        rows["majority"].append(majority == gold)
        rows["always yes"].append(gold == "yes")
        win, share, _ = vote.tally(it.question, ev, "closed")
        rows["vote (abstain = wrong)"].append(win == gold)
        if win is not None:
            rows["vote, where it answers"].append(win == gold)
        if i in model_idx:
            rows["vote (abstain = wrong), model subset"].append(win == gold)
            rows["majority, model subset"].append(majority == gold)
            t = time.perf_counter()
            m = first_answer(model.generate(it.question, ev, [], task="closed").text)
            t_model.append(time.perf_counter() - t)
            rows["model"].append(m == gold)
            rows["vote, else model (closed=vote)"].append((win if win is not None else m) == gold)
            rows["auto (vote if share >= 0.75, else model)"].append(
                (win if win is not None and share >= 0.75 else m) == gold)
    return {
        "split": {"seed": seed, "pool_images": len(pool_imgs), "eval_images": len(images) - len(pool_imgs),
                  "eval_closed_questions": len(evalq), "k": k, "retrieval": "question→case text, MiniLM cosine"},
        "majority_answer": majority,
        "accuracy": {name: {"acc": round(sum(v) / len(v), 4) if v else None, "n": len(v)} for name, v in rows.items()},
        "notes": {"vote": "the vote generator abstains when no retrieved case answers a similar question",
                  "model": "SmolLM2-135M-Instruct, constrained choice (yes/no or the question's options)",
                  "subset": f"model and the strategies using it: the same random {n_model} questions (seed {seed})",
                  "model_latency_s": pct(t_model) if t_model else None},
    }


def ask_cold(index: str, image: str, pipeline: str, questions: list[str], repeat: int = 2) -> list[dict]:
    """``ragmed ask`` as a fresh process per question (what a user runs), wall and CPU seconds."""
    import resource

    rows = []
    for q in questions:
        for r in range(repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            p = subprocess.run([sys.executable, "-c", "from ragmed.cli import main; main()", "ask", image, q,
                                "--index", index, "--pipeline", pipeline, "--json"], capture_output=True, text=True)
            wall = time.perf_counter() - t
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if p.returncode != 0:
                rows.append({"question": q, "error": (p.stderr.strip().splitlines() or ["?"])[-1]})
                continue
            a = json.loads(p.stdout)
            rows.append({"question": q, "run": r + 1, "process_wall_s": round(wall, 3),
                         "process_cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 3),
                         "answer": a["answer"], "citations": a["citations"], "flags": a["flags"],
                         "generator": a["models"].get("generator"),
                         "timings": {k: v for k, v in a["timings"].items() if k in ("generate", "total")}})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warm-n", type=int, default=6)
    ap.add_argument("--cold-n", type=int, default=2, help="cold runs with the model cache filled")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--threads", type=lambda t: [int(x) for x in t.split(",")], default=[1, 2],
                    help="torch threads to compare for gguf, e.g. 1,2")
    ap.add_argument("--accuracy-model-limit", type=int, default=120)
    ap.add_argument("--out", default=str(RESULTS / "bench_generate.json"))
    ap.add_argument("--ask-index", help="also time cold `ragmed ask` processes on this index …")
    ap.add_argument("--ask-image", help="… with this image …")
    ap.add_argument("--ask-pipeline", help="… and this pipeline YAML (its generator: gguf)")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    res: dict = {"command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}}
    import torch
    import transformers

    res["machine"].update(torch=torch.__version__, transformers=transformers.__version__)

    if not args.skip_latency:
        latency(res, args)
    if args.ask_index:
        res["ask_cold"] = ask_cold(args.ask_index, args.ask_image, args.ask_pipeline,
                                   ["Is there a pleural effusion?", "What abnormality is seen in the lungs?"])
    if not args.skip_accuracy and (DATA / "vqa-rad" / "train.json").exists():
        res["closed_strategy"] = closed_accuracy(args.accuracy_model_limit)
        print(json.dumps(res["closed_strategy"], indent=1), flush=True)
    res["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print("wrote", out)


def latency(res: dict, args) -> None:
    from ragmed.generate import create_generator

    create_generator("gguf").warm_up()  # fill the user's model cache (untimed) so that "cached" means cached
    # cold
    with tempfile.TemporaryDirectory() as empty:
        res["cold"] = {"gguf (empty model cache: one-time conversion)": cold("gguf", {"closed": "model"},
                                                                                 {"RAGMED_CACHE": empty})}
    for i in range(args.cold_n):
        res["cold"][f"gguf (cached) #{i + 1}"] = cold("gguf", {"closed": "model"})
    res["cold"]["vote"] = cold("vote", {})
    print(json.dumps(res["cold"], indent=1), flush=True)
    # warm
    res["warm"] = {}
    for threads in args.threads:
        res["warm"][f"gguf closed=model threads={threads}"] = warm(
            create_generator("gguf", threads=threads, closed="model"), args.warm_n)
        print(threads, {t: {k: v for k, v in r.items() if k != "examples"} for t, r in res["warm"][f"gguf closed=model threads={threads}"].items()}, flush=True)
    res["warm"]["gguf default (closed=vote: the model only when no case answers)"] = warm(
        create_generator("gguf"), args.warm_n, tasks=("closed",))
    res["warm"]["vote"] = warm(create_generator("vote"), args.warm_n, tasks=("closed",))
    res["warm"]["extractive"] = warm(create_generator("extractive"), args.warm_n)
    proc, url = start_server(["--generator", "gguf"])
    try:
        res["cold"]["openai client → local gguf server (server already up)"] = cold(
            "openai", {"base_url": url + "/v1", "images": False, "closed": "model"})
        res["warm"]["openai → ragmed serve openai --generator gguf (127.0.0.1)"] = warm(
            create_generator("openai", base_url=url + "/v1", images=False, closed="model"), args.warm_n)
        res["warm"]["openai stream=true → same server"] = warm(
            create_generator("openai", base_url=url + "/v1", images=False, stream=True), args.warm_n, tasks=("open",))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    with tempfile.TemporaryDirectory() as d:
        from ragmed.generate.testing import write_tiny_llava

        write_tiny_llava(Path(d) / "fake-tiny-llava")
        res["warm"]["transformers FAKE tiny LLaVA (plumbing only)"] = warm(
            create_generator("transformers", path=str(Path(d) / "fake-tiny-llava")), args.warm_n)
    print(json.dumps({k: {t: {kk: vv for kk, vv in r.items() if kk != "examples"} for t, r in v.items()}
                      for k, v in res["warm"].items()}, indent=1), flush=True)


if __name__ == "__main__":
    main()
