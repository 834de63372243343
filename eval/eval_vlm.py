"""Evaluate ragmed-vlm on the evaluation images of the committed VQA-RAD split (eval/splits/vqa_rad_vlm_seed0.json).

    python eval/eval_vlm.py --tower TOWER_DIR --work WORK_DIR [--weights DIR] [--out eval/results/eval_vlm.json]

TOWER_DIR is the image tower trained without the evaluation images (eval/train_default_encoder.py --holdout-split);
the retrieval index (WORK_DIR/index) holds the training images of the split only, built with that tower.

Measured, on the same questions, side by side:
  - closed accuracy of the VLM with the real image, with a Gaussian-noise image (the retrieval, where used, keeps the
    real image's evidence, as in MMed-RAG's cross-modality test), and with no image;
  - the vote over the retrieved cases (ragmed.generate.vote, the default pipeline's closed answerer), the
    combination (the vote when its weighted share ≥ 0.75, else the VLM: ``closed: auto`` of the backend), and two
    question-only answerers (the majority answer of the same question text in the training part, else "yes"; and
    the VLM with no image);
  - open recall (gold tokens found in the answer) of the VLM (greedy, 8 new tokens) with the real image, noise, none;
  - 95 % bootstrap intervals resampling evaluation IMAGES (1,000 resamples), for each accuracy and for paired
    differences (real − noise, VLM − vote, …).
Scoring: ragmed.eval.normalize (the project's normaliser). Closed questions are answered by the first-token
log-probability of each choice (yes/no or the question's options), as the backend's constrained ``choose``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_vlm as T  # noqa: E402  (the recipe's data and scoring helpers)

REPO = T.REPO
DATA = T.DATA


def build_index(tower: Path, train_images: list[str], work: Path) -> tuple[Path, Path]:
    """The retrieval index of the training images of the split, with the held-out tower (built once)."""
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    pipe = work / "pipeline.yaml"
    pipe.write_text(yaml.safe_dump({
        "name": "vlm-eval", "description": "eval/eval_vlm.py: the default retrieval with the held-out tower",
        "encoders": {"text": {"name": "minilm"}, "image": {"name": "ragmed-default", "params": {"path": str(tower)}}},
        "index": {"factory": "auto", "fit_image_encoder": False},
        "retrieval": {"top_k": 10, "channels": ["image-image", "image-report", "question-report", "bm25"],
                      "fusion": "rrf"},
        "select": {"name": "fixed", "params": {"k": 5}},
        "generator": {"name": "vote"},
        "knowledge": {"path": None, "max_concepts": 0}}))
    idx = work / "index"
    if not (idx / "manifest.json").exists() and not (idx / "current").exists():
        rows = json.loads((DATA / "vqa-rad" / "train.json").read_text())
        keep = set(train_images)
        corpus = work / "train_part.json"
        corpus.write_text(json.dumps([r for r in rows if r["image_name"] in keep]))
        from ragmed.config import load_pipeline
        from ragmed.corpus import read_corpus
        from ragmed.pipeline.build import build_from_config

        cfg = load_pipeline(str(pipe))
        build_from_config(read_corpus(corpus, format="vqa-rad", images=DATA / "vqa-rad" / "images"), idx, cfg,
                          progress=False)
    return idx, pipe


def retrieve_votes(idx: Path, pipe: Path, rows: list[dict], cache: Path, log_every: int = 50) -> dict:
    """Per question (qid): the vote's answer, winner and weighted share, every case's vote (ref, answer, weight)
    and the cited refs, over the selected cases (its own image excluded); cached in ``cache`` (JSON) and resumed.
    The one retrieval loop of the VQA-RAD recipes (eval_vlm, answers_common, fit_evidence_pooling)."""
    from ragmed.eval.vqa import short_answer
    from ragmed.generate.vote import VoteGenerator
    from ragmed.pipeline import Pipeline

    out = json.loads(cache.read_text()) if cache.exists() else {}
    todo = [r for r in rows if str(r["qid"]) not in out]
    if not todo:
        return out
    p = Pipeline.for_index(idx, pipe)
    voter = VoteGenerator()
    images: dict = {}
    t0 = time.perf_counter()
    for n, r in enumerate(todo):
        name = r["image"][1]
        if name not in images:
            images.clear()  # rows come grouped by image: hold one decoded image at a time
            images[name] = T.vqa_image(name)
        img = images[name]
        task = "closed" if r["closed"] else "open"
        ret = p.retrieve(img, r["question"], exclude_hashes={img.content_hash})
        ans = p.answer(ret, r["question"], task=task)
        win, share, votes = voter.tally(r["question"], ans.evidence, task)
        out[str(r["qid"])] = {"vote": short_answer(ans), "share": float(share or 0.0), "winner": win,
                              "votes": [[v.ref, v.answer, round(float(v.weight), 4)] for v in votes],
                              "citations": list(ans.citations), "n_evidence": len(ans.evidence)}
        if (n + 1) % log_every == 0:
            cache.write_text(json.dumps(out))
            print(f"retrieval {n + 1}/{len(todo)} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    cache.write_text(json.dumps(out))
    return out


def generate_open(llava, enc: "T.Encoder", rows: list[dict], arrs: dict, *, image_mode: str = "real",
                  max_new_tokens: int = 8, batch_size: int = 16, seed: int = 0) -> list[str]:
    """Greedy short answers, batched with left padding."""
    import torch

    rng = np.random.default_rng(seed)
    tok = enc.tok
    out = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        prompts = [enc.prompt_ids(r["question"], image_mode != "none") for r in chunk]
        n = max(len(p) for p in prompts)
        ids = torch.full((len(chunk), n), tok.pad_token_id, dtype=torch.long)
        att = torch.zeros((len(chunk), n), dtype=torch.long)
        for j, p in enumerate(prompts):
            ids[j, n - len(p):] = torch.tensor(p)
            att[j, n - len(p):] = 1
        kw = {}
        if image_mode != "none":
            a = np.stack([arrs[r["image"]] for r in chunk])
            kw["pixel_values"] = enc.pixels(T.noise_like(a, rng) if image_mode == "noise" else a)
        with torch.inference_mode():
            gen = llava.generate(input_ids=ids, attention_mask=att, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=enc.end, temperature=None, top_p=None,
                                 top_k=None, **kw)
        out += [tok.decode(g[n:], skip_special_tokens=True).strip() for g in gen]
    return out


def bootstrap(values_by_image: dict[str, list[float]], n: int = 1000, seed: int = 0) -> list[float]:
    """95 % interval of the mean over questions, resampling images (with their questions)."""
    imgs = sorted(values_by_image)
    sums = np.array([sum(values_by_image[k]) for k in imgs], dtype=float)
    cnts = np.array([len(values_by_image[k]) for k in imgs], dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(imgs), size=(n, len(imgs)))
    means = sums[idx].sum(1) / np.maximum(cnts[idx].sum(1), 1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def summarise(rows: list[dict], scores: dict[str, list[float]], pairs: list[tuple[str, str]]) -> dict:
    out = {}
    for name, v in scores.items():
        by = defaultdict(list)
        for r, x in zip(rows, v):
            by[r["image"][1]].append(x)
        out[name] = {"mean": round(float(np.mean(v)), 4), "ci95": bootstrap(by), "n": len(v)}
    for a, b in pairs:
        by = defaultdict(list)
        for r, x, y in zip(rows, scores[a], scores[b]):
            by[r["image"][1]].append(x - y)
        out[f"{a} - {b}"] = {"mean": round(float(np.mean(np.array(scores[a]) - np.array(scores[b]))), 4),
                             "ci95": bootstrap(by)}
    return out


def question_only(train_rows: list[dict]):
    """The majority answer of the same (normalised) question text in the training part, else "yes" (closed) / the
    most common open answer."""
    from ragmed.eval.normalize import normalize_answer

    by_q = defaultdict(Counter)
    for r in train_rows:
        by_q[normalize_answer(r["question"])][normalize_answer(r["answer"])] += 1
    common_open = Counter(normalize_answer(r["answer"]) for r in train_rows if not r["closed"]).most_common(1)[0][0]

    def answer(r):
        c = by_q.get(normalize_answer(r["question"]))
        if c:
            return c.most_common(1)[0][0]
        return "yes" if r["closed"] else common_open

    return answer


def eval_rows(eval_images: list[str], max_closed: int = 0, max_open: int = 0, seed: int = 0):
    """The evaluation questions (closed, open), each type a seeded sample when a maximum is given."""
    from ragmed.eval.normalize import normalize_answer

    rows = [r for r in T.vqa_rows(set(eval_images)) if normalize_answer(r["answer"])]
    closed = [r for r in rows if r["closed"]]
    opened = [r for r in rows if not r["closed"]]
    rng = np.random.default_rng(seed)
    if max_closed and max_closed < len(closed):
        closed = [closed[i] for i in sorted(rng.choice(len(closed), max_closed, replace=False))]
    if max_open and max_open < len(opened):
        opened = [opened[i] for i in sorted(rng.choice(len(opened), max_open, replace=False))]
    return closed, opened


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tower", required=True, help="the tower trained without the evaluation images")
    ap.add_argument("--work", required=True, help="working directory (index, retrieval cache)")
    ap.add_argument("--weights", default=None, help="ragmed-vlm weights (default: the shipped ones)")
    ap.add_argument("--split", default=str(T.SPLIT))
    ap.add_argument("--out", default=str(REPO / "eval" / "results" / "eval_vlm.json"))
    ap.add_argument("--max-closed", type=int, default=0, help="a seeded sample of N closed questions (0: all)")
    ap.add_argument("--max-open", type=int, default=0, help="a seeded sample of N open questions (0: all)")
    ap.add_argument("--open-modes", default="real,noise,none")
    ap.add_argument("--vote-share", type=float, default=0.75)
    ap.add_argument("--no-retrieval", action="store_true", help="skip the index, the vote and the combination")
    ap.add_argument("--no-open", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    import torch

    import ragmed.generate.vlm  # noqa: F401
    from ragmed.eval.vqa import closed_correct, token_scores
    from ragmed.generate.vlm.build import SHIPPED, load_parts

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    train_images, eval_images = T.load_split(Path(a.split))
    closed, opened = eval_rows(eval_images, a.max_closed, a.max_open, a.seed)
    rows = closed + opened
    weights = Path(a.weights) if a.weights else SHIPPED
    llava, processor = load_parts(weights)
    enc = T.Encoder(processor)
    arrs = {("vqa-rad", n): enc.letterbox(T.vqa_image(n)) for n in sorted({r["image"][1] for r in rows})}
    print(f"{len(closed)} closed, {len(opened)} open questions on {len(arrs)} images; loaded in "
          f"{time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)

    res: dict = {"closed": {}, "open": {}}
    preds: dict[str, list] = {}
    for mode in ("real", "noise", "none"):
        t = time.perf_counter()
        preds[f"vlm_{mode}"] = [p["pred"] for p in T.first_token_choice(llava, enc, closed, arrs, image_mode=mode,
                                                                         seed=a.seed)]
        print(f"closed {mode}: {time.perf_counter() - t:.0f}s", file=sys.stderr, flush=True)
    qo = question_only(T.vqa_rows(set(train_images)))
    preds["question_only_majority"] = [qo(r) for r in closed]
    preds["always_yes"] = ["yes" for _ in closed]
    pairs = [("vlm_real", "vlm_noise"), ("vlm_real", "vlm_none"), ("vlm_real", "question_only_majority")]
    votes = None
    if not a.no_retrieval:
        t = time.perf_counter()
        idx, pipe = build_index(Path(a.tower), train_images, Path(a.work))
        votes = retrieve_votes(idx, pipe, closed + (opened if not a.no_open else []), Path(a.work) / "votes.json")
        print(f"retrieval + vote: {time.perf_counter() - t:.0f}s", file=sys.stderr, flush=True)
        preds["vote"] = [votes[str(r["qid"])]["vote"] for r in closed]
        for mode in ("real", "noise"):
            preds[f"vote_or_vlm_{mode}"] = [
                v["vote"] if v["winner"] is not None and v["share"] >= a.vote_share else p
                for v, p in zip((votes[str(r["qid"])] for r in closed), preds[f"vlm_{mode}"])]
            preds[f"vote_else_vlm_{mode}"] = [v["vote"] if v["winner"] is not None else p for v, p in
                                              zip((votes[str(r["qid"])] for r in closed), preds[f"vlm_{mode}"])]
        preds["vote_abstains"] = ["" if votes[str(r["qid"])]["winner"] is None else "answered" for r in closed]
        pairs += [("vote_else_vlm_real", "vote_else_vlm_noise"), ("vlm_real", "vote"), ("vote_or_vlm_real", "vote"), ("vote_or_vlm_real", "vote_or_vlm_noise")]
    abst = preds.pop("vote_abstains", None)
    scores = {k: [float(closed_correct(p, r["answer"])) for p, r in zip(v, closed)] for k, v in preds.items()}
    res["closed"] = summarise(closed, scores, pairs)
    if abst is not None:
        res["closed"]["vote_abstention_rate"] = {"mean": round(abst.count("") / len(abst), 4), "ci95": None,
                                                 "n": len(abst)}
    open_preds: dict[str, list[str]] = {}
    if not a.no_open and opened:
        for mode in a.open_modes.split(","):
            t = time.perf_counter()
            open_preds[f"vlm_{mode}"] = generate_open(llava, enc, opened, arrs, image_mode=mode, seed=a.seed)
            print(f"open {mode}: {time.perf_counter() - t:.0f}s", file=sys.stderr, flush=True)
        open_preds["question_only_majority"] = [qo(r) for r in opened]
        if votes is not None:
            open_preds["vote"] = [votes[str(r["qid"])]["vote"] for r in opened]
        oscores = {k: [token_scores(p, r["answer"])["recall"] for p, r in zip(v, opened)]
                   for k, v in open_preds.items()}
        res["open"] = summarise(opened, oscores, [p for p in [("vlm_real", "vlm_noise")] if p[1] in oscores] +
                                ([("vlm_real", "vote")] if votes is not None else []))
    meta = json.loads((weights / "vlm.json").read_text())
    result = {
        "schema": 1, "task": "vlm-vqa",
        "command": "python eval/eval_vlm.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "split": Path(a.split).name, "n_eval_images": len({r["image"][1] for r in closed + opened}), "n_closed": len(closed), "n_open": len(opened),
        "model": {"weights": weights.name, "step": meta.get("step"), "dev_closed_acc": meta.get("dev_closed_acc"),
                  "trained_on": meta.get("trained_on"), "command": meta.get("command")},
        "metrics": {"closed_accuracy": res["closed"], "open_recall": res["open"]},
        "notes": ["closed: first-token log-probability of each choice; open: greedy, 8 new tokens",
                  "noise: Gaussian luma noise (mean 128, sd 64) in the image area of the letterboxed frame",
                  "vote_or_vlm: the vote when its weighted share >= %.2f, else the VLM (backend closed: auto)"
                  % a.vote_share,
                  "vote: the vote alone; it abstains (scored wrong) when no retrieved case answers; "
                  "vote_else_vlm: the vote, the VLM when every case abstains (closed: vote, the default pipeline's rule)",
                  "intervals: 95%% bootstrap over evaluation images, 1000 resamples"],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    pred_file = out.with_name(out.stem + ".predictions.json")
    pred_file.write_text(json.dumps([{"qid": r["qid"], "question": r["question"], "gold": r["answer"],
                                      **{k: v[i] for k, v in preds.items()}} for i, r in enumerate(closed)] +
                                    [{"qid": r["qid"], "question": r["question"], "gold": r["answer"],
                                      **{k: v[i] for k, v in open_preds.items()}} for i, r in enumerate(opened)]))
    for kind in ("closed_accuracy", "open_recall"):
        for k, v in result["metrics"][kind].items():
            print(f"{kind:16s} {k:40s} {v['mean']:.3f} {v['ci95']}", file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
