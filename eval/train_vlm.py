"""Train ragmed-vlm (ragmed/generate/vlm): LLaVA-style, SmolLM2-135M-Instruct + the ragmed CNN tower, on a CPU.

Trainable: the projector (tower tokens → language model) and a LoRA adapter on the language model; the tower and the
language model's own weights are frozen. Loss: cross-entropy on the answer tokens only.

Data (redistributable only; ../shared/data/README.md):
  - VQA-RAD (CC0): the question–answer pairs of the TRAINING images of the committed split (eval/splits/...);
    a seeded tenth of those images is the development slice (stopping rule), never trained on;
  - PneumoniaMNIST (CC BY 4.0, train split), BreastMNIST (CC BY 4.0, train split): labels as yes/no and short questions;
  - BCCD (MIT): "is this a blood smear", white-cell count;
  - POCUS lung ultrasound, CC BY rows only: the label.
The evaluation images of the split are never read (and the tower given with --tower must not have seen them:
eval/train_default_encoder.py --holdout-split).

    python eval/train_vlm.py --tower TOWER_DIR --run RUN_DIR [--resume] [--ship]

Seeded (batches are a function of seed and step), resumable (--resume continues from RUN_DIR/ckpt.pt), progress
on stderr and in RUN_DIR/history.json, a checkpoint every --eval-every steps, the best state by development closed
accuracy (ties: lower development loss) kept in RUN_DIR/best; stops at --max-steps, at --max-minutes, or when the
development accuracy has not improved for --patience evaluations. --ship copies RUN_DIR/best to the shipped weights.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RAGMED_DATA", REPO.parent / "shared" / "data"))
SPLIT = REPO / "eval" / "splits" / "vqa_rad_vlm_seed0.json"
# share of each source in the batches (sampling weights)
SHARES = {"vqa-rad": 0.7, "pneumoniamnist": 0.1, "breastmnist": 0.08, "bccd": 0.06, "pocus-cc-by": 0.06}
PROMPT = "{question}"  # the user text after the image (the backend's prompt file: ragmed/generate/vlm/prompts)


def load_split(path: Path = SPLIT) -> tuple[list[str], list[str]]:
    s = json.loads(Path(path).read_text())
    return sorted(s["train_images"]), sorted(s["eval_images"])


def dev_images(train_images: list[str], frac: float = 0.1, seed: int = 0) -> set[str]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(train_images))
    return {train_images[i] for i in perm[: max(1, int(round(frac * len(train_images))))]}


def vqa_rows(images: set[str]) -> list[dict]:
    rows = json.loads((DATA / "vqa-rad" / "train.json").read_text())
    out = []
    for r in rows:
        if r["image_name"] in images:
            out.append({"image": ("vqa-rad", r["image_name"]), "question": str(r["question"]).strip(),
                        "answer": str(r["answer"]).strip(), "closed": r["answer_type"].strip().upper() == "CLOSED",
                        "source": "vqa-rad", "qid": r["qid"]})
    return out


def vqa_image(name: str):
    from ragmed.io import load_image

    return load_image(DATA / "vqa-rad" / "images" / name)


def _mnist(npz: Path, source: str, qa_by_label, split="train", limit=None, seed=0):
    d = np.load(npz)
    imgs, labels = d[f"{split}_images"], d[f"{split}_labels"].reshape(-1)
    idx = np.arange(len(imgs))
    if limit and limit < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
    items, pix = [], {}
    for i in idx:
        key = (source, f"{split}-{i}")
        pix[key] = np.ascontiguousarray(imgs[i], dtype=np.uint8)
        for q, a in qa_by_label[int(labels[i])]:
            items.append({"image": key, "question": q, "answer": a, "closed": a in ("yes", "no") or " or " in q,
                          "source": source})
    return items, pix


def extra_items(seed: int = 0, mnist_limit: int = 600):
    """The non-VQA-RAD sources as question–answer pairs: (items, {image key: uint8 array or path})."""
    items, pix = [], {}
    it, px = _mnist(DATA / "images" / "pneumoniamnist.npz", "pneumoniamnist", {
        0: [("Is there pneumonia?", "no"), ("Is this chest x-ray normal?", "yes"),
            ("What does this chest x-ray show?", "normal lungs")],
        1: [("Is there pneumonia?", "yes"), ("Is this chest x-ray normal?", "no"),
            ("What does this chest x-ray show?", "pneumonia")]}, limit=mnist_limit, seed=seed)
    items += it
    pix.update(px)
    it, px = _mnist(DATA / "images" / "breastmnist" / "breastmnist.npz", "breastmnist", {
        0: [("Is the breast lesion malignant?", "yes"), ("What imaging modality is this?", "ultrasound")],
        1: [("Is the breast lesion malignant?", "no"), ("What imaging modality is this?", "ultrasound")]},
        limit=mnist_limit, seed=seed)
    items += it
    pix.update(px)
    root = DATA / "images" / "bccd" / "BCCD"
    for xml in sorted((root / "Annotations").glob("*.xml")):
        tree = ET.parse(xml)
        img = root / "JPEGImages" / (tree.findtext("filename") or xml.stem + ".jpg")
        if not img.exists():
            img = root / "JPEGImages" / (xml.stem + ".jpg")
        if not img.exists():
            continue
        names = [o.findtext("name") for o in tree.findall("object")]
        key = ("bccd", xml.stem)
        pix[key] = img
        items += [{"image": key, "question": "What kind of image is this?", "answer": "blood smear", "closed": False,
                   "source": "bccd"},
                  {"image": key, "question": "How many white blood cells are there?",
                   "answer": str(names.count("WBC")), "closed": False, "source": "bccd"}]
    lab = {"regular": "normal lung", "COVID-19": "covid-19 pneumonia", "Bacterial pneumonia": "bacterial pneumonia",
           "Viral pneumonia": "viral pneumonia"}
    proot = DATA / "images" / "pocus-lus"
    with open(proot / "metadata.csv", newline="") as f:
        for r in csv.DictReader(f):
            lic = r["license"].replace(" ", "")
            if not lic.startswith("CCBY") or "NC" in lic or "ND" in lic:
                continue
            key = ("pocus-cc-by", r["file"])
            pix[key] = proot / r["file"]
            items += [{"image": key, "question": "What does this lung ultrasound show?",
                       "answer": lab.get(r["label"], r["label"].lower()), "closed": False, "source": "pocus-cc-by"},
                      {"image": key, "question": "Is this lung ultrasound normal?",
                       "answer": "yes" if r["label"] == "regular" else "no", "closed": True, "source": "pocus-cc-by"}]
    return items, pix


def target(answer: str) -> str:
    return " ".join(str(answer).split()).lower()


class Encoder:
    """Items → token ids (prompt + answer, labels on the answer) and images → letterboxed uint8 arrays, exactly as
    the generator backend presents them (ragmed.generate.chat.to_pil → the processor)."""

    def __init__(self, processor):
        self.processor = processor
        self.tok = processor.tokenizer
        self.end = self.tok.convert_tokens_to_ids("<|im_end|>")

    def template(self, image: bool) -> str:
        """The chat template rendered once around a placeholder (rendering it per item is slow)."""
        key = "_tpl_img" if image else "_tpl_txt"
        if not hasattr(self, key):
            content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": "\x00"}]
            text = self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=True, tokenize=False)
            n = self.processor.image_processor.size // self.processor.patch_size
            setattr(self, key, text.replace("<image>", "<image>" * (n * n)))
        return getattr(self, key)

    def prompt_ids(self, question: str, image: bool = True) -> list[int]:
        text = self.template(image).replace("\x00", PROMPT.format(question=question))
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def example(self, item: dict, image: bool = True) -> tuple[list[int], list[int]]:
        p = self.prompt_ids(item["question"], image)
        a = self.tok(target(item["answer"]), add_special_tokens=False)["input_ids"] + [self.end]
        return p + a, [-100] * len(p) + a

    def letterbox(self, img) -> np.ndarray:
        from ragmed.generate.chat import to_pil

        return self.processor.image_processor.letterbox([to_pil(img)])[0]

    def pixels(self, arrs: np.ndarray):
        import torch

        ip = self.processor.image_processor
        x = torch.from_numpy(np.ascontiguousarray(arrs)).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(ip.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(ip.image_std).view(1, 3, 1, 1)
        return (x - mean) / std


def collate(examples: list[tuple[list[int], list[int]]], pad: int):
    import torch

    n = max(len(e[0]) for e in examples)
    ids = torch.full((len(examples), n), pad, dtype=torch.long)
    lab = torch.full((len(examples), n), -100, dtype=torch.long)
    att = torch.zeros((len(examples), n), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, :len(x)] = torch.tensor(x)
        lab[i, :len(y)] = torch.tensor(y)
        att[i, :len(x)] = 1
    return ids, lab, att


def answer_loss(llava, ids, lab, att, pixel_values):
    """Mean cross-entropy over the answer tokens, computing the vocabulary projection only there."""
    import torch

    out = llava.model(input_ids=ids, pixel_values=pixel_values, attention_mask=att, use_cache=False)
    h = out.last_hidden_state[:, :-1]
    y = lab[:, 1:]
    m = y != -100
    logits = llava.lm_head(h[m])
    return torch.nn.functional.cross_entropy(logits.float(), y[m])


def first_token_choice(llava, enc: Encoder, rows: list[dict], arrs: dict, *, image_mode: str = "real",
                       batch_size: int = 16, seed: int = 0) -> list[dict]:
    """Closed questions answered by the first-token log-probability of each choice (yes/no or the question's
    options), batched, right-padded (the score is read at each prompt's last position). ``image_mode``: real,
    noise (Gaussian noise of the same size instead of the image) or none (no image tokens)."""
    import torch

    from ragmed.generate.text import options

    out = []
    rng = np.random.default_rng(seed)
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        prompts = [enc.prompt_ids(r["question"], image_mode != "none") for r in chunk]
        ids, _, att = collate([(p, p) for p in prompts], enc.tok.pad_token_id)
        pv = None
        if image_mode != "none":
            a = np.stack([arrs[r["image"]] for r in chunk])
            if image_mode == "noise":
                a = noise_like(a, rng)
            pv = enc.pixels(a)
        with torch.inference_mode():
            h = llava.model(input_ids=ids, pixel_values=pv, attention_mask=att, use_cache=False).last_hidden_state
            last = h[torch.arange(len(chunk)), att.sum(1) - 1]
            lp = torch.log_softmax(llava.lm_head(last).float(), -1)
        for j, r in enumerate(chunk):
            choices = options(r["question"]) or ["yes", "no"]
            sc = {}
            for c in choices:
                best = -1e9
                for v in dict.fromkeys((c, c[:1].upper() + c[1:])):
                    t = enc.tok(v, add_special_tokens=False)["input_ids"]
                    if t:
                        best = max(best, float(lp[j, t[0]]))
                sc[c] = best
            out.append({"pred": max(choices, key=lambda c: sc[c]), "scores": sc})
    return out


def noise_like(letterboxed: np.ndarray, rng) -> np.ndarray:
    """Gaussian noise in place of each image's content (same letterbox frame: the padding stays black, the image
    area gets luma ~ N(128, 64²), chroma as the original)."""
    out = letterboxed.copy()
    for k in range(len(out)):
        y = out[k, ..., 0]
        area = (y > 0) | (out[k, ..., 1] != 128) | (out[k, ..., 2] != 128)
        nz = np.clip(rng.normal(128, 64, size=y.shape), 0, 255).astype(np.uint8)
        y[area] = nz[area]
    return out


def cache_images(enc: Encoder, keys, extra_pix: dict, path: Path) -> dict:
    """Letterboxed uint8 arrays of every image used, cached in ``path`` (npz)."""
    cached: dict = {}
    if path.exists():
        z = np.load(path, allow_pickle=False)
        cached = {tuple(k.split("|", 1)): z[k] for k in z.files}
    todo = [k for k in keys if k not in cached]
    for k in todo:
        if k[0] == "vqa-rad":
            img = vqa_image(k[1])
        else:
            src = extra_pix[k]
            if isinstance(src, Path):
                from ragmed.io import load_image

                img = load_image(src)
            else:
                img = src
        cached[k] = enc.letterbox(img)
    if todo:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{"|".join(k): v for k, v in cached.items()})
        os.replace(tmp, path)
    return cached


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def plot(run: Path, out: Path) -> int:
    """The training loss (mean of 10 steps) and the development closed accuracy against the step."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install '.[eval]'): no plot", file=sys.stderr)
        return 1
    h = json.loads((run / "history.json").read_text())
    steps = [x["step"] for x in h["history"]]
    loss = np.array([x["loss"] for x in h["history"]])
    k = min(10, len(loss)) or 1
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, color="0.8", lw=0.8, label="loss (batch)")
    ax.plot(steps[k - 1:], smooth, color="C0", label=f"loss (mean of {k})")
    ax.set_xlabel("step (batch of %d)" % h["args"]["batch_size"])
    ax.set_ylabel("answer cross-entropy")
    ax2 = ax.twinx()
    ev = h.get("evals", [])
    ax2.plot([e["step"] for e in ev], [e["dev_closed_acc"] for e in ev], "o-", color="C1", label="dev closed acc")
    ax2.set_ylabel("development closed accuracy")
    fig.legend(loc="upper right", fontsize=8)
    ax.set_title("ragmed-vlm training (%.0f min on a shared 2-core CPU)" % (h.get("seconds", 0) / 60), fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tower", required=True, help="ragmed encoder dir trained without the evaluation images")
    ap.add_argument("--run", required=True, help="run directory (checkpoints, history, best)")
    ap.add_argument("--split", default=str(SPLIT))
    ap.add_argument("--grid", type=int, default=2, help="image tokens per side (2 → 4 image tokens)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=800)
    ap.add_argument("--max-minutes", type=float, default=0, help="stop (and keep the best) after this long")
    ap.add_argument("--lr", type=float, default=1e-3, help="LoRA learning rate")
    ap.add_argument("--projector-lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--dev-closed", type=int, default=120, help="development closed questions scored per evaluation")
    ap.add_argument("--dev-loss-rows", type=int, default=32, help="development pairs for the development loss")
    ap.add_argument("--initial-eval", action="store_true", help="also score the development slice before step 1")
    ap.add_argument("--plot", default=None, help="only write the loss curve of RUN/history.json to this PNG")
    ap.add_argument("--mnist-limit", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--ship", action="store_true", help="copy RUN/best to ragmed/generate/vlm/weights/ragmed-vlm")
    a = ap.parse_args(argv)

    import torch
    from peft import get_peft_model

    import ragmed.generate.vlm  # noqa: F401  (registers the tower with the Auto classes)
    from ragmed.generate.vlm.build import SHIPPED, build_base, lora_config, save_parts

    run = Path(a.run)
    if a.plot:
        return plot(run, Path(a.plot))
    if a.ship:
        if not (run / "best" / "vlm.json").is_file():
            print(f"no best weights in {run}", file=sys.stderr)
            return 1
        SHIPPED.mkdir(parents=True, exist_ok=True)
        for name in ("vlm.json", "tower.safetensors"):
            shutil.copy2(run / "best" / name, SHIPPED / name)
        shutil.rmtree(SHIPPED / "adapter", ignore_errors=True)
        shutil.copytree(run / "best" / "adapter", SHIPPED / "adapter")
        print(f"shipped {run / 'best'} -> {SHIPPED.relative_to(REPO)}", file=sys.stderr)
        return 0

    torch.set_num_threads(a.threads)
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_images, eval_images = load_split(Path(a.split))
    dev = dev_images(train_images, seed=a.seed)
    fit_images = set(train_images) - dev
    assert not (set(eval_images) & (fit_images | dev))
    items = vqa_rows(fit_images)
    dev_rows = vqa_rows(dev)
    extra, extra_pix = extra_items(a.seed, a.mnist_limit)
    items += extra
    counts = defaultdict(lambda: {"images": set(), "pairs": 0})
    for it in items:
        counts[it["source"]]["images"].add(it["image"])
        counts[it["source"]]["pairs"] += 1
    data_counts = {k: {"images": len(v["images"]), "pairs": v["pairs"]} for k, v in counts.items()}
    data_counts["vqa-rad dev slice"] = {"images": len(dev), "pairs": len(dev_rows)}

    model, processor = build_base(a.tower, grid=a.grid, seed=a.seed)
    pm = get_peft_model(model, lora_config(r=a.lora_r))
    llava = pm.base_model.model
    enc = Encoder(processor)
    keys = sorted({it["image"] for it in items} | {r["image"] for r in dev_rows})
    arrs = cache_images(enc, keys, extra_pix, run / "images.npz")
    examples = [enc.example(it) for it in items]
    src = [it["source"] for it in items]
    n_src = {s: src.count(s) for s in set(src)}
    w = np.array([SHARES[s] / n_src[s] for s in src])
    w /= w.sum()
    dev_closed = [r for r in dev_rows if r["closed"]][: a.dev_closed]
    dev_loss_rows = dev_rows[: a.dev_loss_rows]
    print(f"data {json.dumps(data_counts)}; prepared in {time.perf_counter() - t0:.0f}s", file=sys.stderr)

    proj = [p for n, p in pm.named_parameters() if p.requires_grad and "multi_modal_projector" in n]
    lora = [p for n, p in pm.named_parameters() if p.requires_grad and "multi_modal_projector" not in n]
    opt = torch.optim.AdamW([{"params": lora, "lr": a.lr}, {"params": proj, "lr": a.projector_lr}],
                            weight_decay=0.0)
    state = {"step": 0, "history": [], "evals": [], "best": None, "bad": 0, "seconds": 0.0}
    ck = run / "ckpt.pt"
    if a.resume and ck.exists():
        c = torch.load(ck, map_location="cpu", weights_only=False)
        trainable = {n: p for n, p in pm.named_parameters() if p.requires_grad}
        for n, v in c["params"].items():
            trainable[n].data.copy_(v)
        opt.load_state_dict(c["opt"])
        state = c["state"]
        print(f"resumed at step {state['step']}", file=sys.stderr)

    def evaluate():
        pm.eval()
        res = first_token_choice(llava, enc, dev_closed, arrs, seed=a.seed)
        acc = float(np.mean([r["pred"] == target(d["answer"]) for r, d in zip(res, dev_closed)]))
        with torch.inference_mode():
            losses = []
            for i in range(0, len(dev_loss_rows), 16):
                ch = dev_loss_rows[i:i + 16]
                ids, lab, att = collate([enc.example(r) for r in ch], enc.tok.pad_token_id)
                losses.append(float(answer_loss(llava, ids, lab, att, enc.pixels(np.stack([arrs[r["image"]] for r in ch])))))
        pm.train()
        return acc, float(np.mean(losses))

    def checkpoint():
        tmp = ck.with_suffix(".tmp")
        torch.save({"params": {n: p.detach().clone() for n, p in pm.named_parameters() if p.requires_grad},
                    "opt": opt.state_dict(), "state": state, "args": vars(a)}, tmp)
        os.replace(tmp, ck)
        (run / "history.json").write_text(json.dumps({"args": vars(a), "data": data_counts, **state}, indent=1))

    info = {"trained_on": data_counts, "split": Path(a.split).name, "tower": Path(a.tower).name,
            "command": "python eval/train_vlm.py " + " ".join(
                "TOWER" if x == a.tower else "RUN" if x == a.run else x
                for x in (argv if argv is not None else sys.argv[1:]))}
    if a.initial_eval and state["step"] == 0 and not state["evals"]:
        acc, dl = evaluate()
        state["evals"].append({"step": 0, "dev_closed_acc": acc, "dev_loss": dl})
        print(f"step 0: dev closed acc {acc:.3f}, dev loss {dl:.3f}", file=sys.stderr)
    pm.train()
    t_start = time.perf_counter() - state["seconds"]
    pad = enc.tok.pad_token_id
    stop = None
    while state["step"] < a.max_steps:
        step = state["step"]
        rng = np.random.default_rng([a.seed, step])
        idx = rng.choice(len(items), size=a.batch_size, p=w)
        ids, lab, att = collate([examples[i] for i in idx], pad)
        pv = enc.pixels(np.stack([arrs[items[i]["image"]] for i in idx]))
        for g, base in zip(opt.param_groups, (a.lr, a.projector_lr)):
            g["lr"] = lr_at(step, a.max_steps, base, a.warmup)
        ts = time.perf_counter()
        loss = answer_loss(llava, ids, lab, att, pv)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lora + proj, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] = step + 1
        state["seconds"] = time.perf_counter() - t_start
        state["history"].append({"step": step + 1, "loss": float(loss), "seconds": round(state["seconds"], 1)})
        if (step + 1) % 5 == 0:
            recent = np.mean([h["loss"] for h in state["history"][-20:]])
            print(f"step {step + 1}/{a.max_steps} loss {recent:.3f} ({time.perf_counter() - ts:.1f}s/step, "
                  f"{state['seconds'] / 60:.1f} min)", file=sys.stderr, flush=True)
        if (step + 1) % a.eval_every == 0 or step + 1 == a.max_steps:
            acc, dl = evaluate()
            state["evals"].append({"step": step + 1, "dev_closed_acc": acc, "dev_loss": dl})
            best = state["best"]
            if best is None or acc > best["dev_closed_acc"] or (acc == best["dev_closed_acc"] and dl < best["dev_loss"]):
                state["best"] = {"step": step + 1, "dev_closed_acc": acc, "dev_loss": dl}
                state["bad"] = 0
                save_parts(pm, run / "best", info={**info, "step": step + 1, "dev_closed_acc": acc, "dev_loss": dl,
                                                   "train_seconds": round(state["seconds"])})
            else:
                state["bad"] += 1
            print(f"step {step + 1}: dev closed acc {acc:.3f}, dev loss {dl:.3f} (best {state['best']})",
                  file=sys.stderr, flush=True)
            checkpoint()
            if state["bad"] >= a.patience:
                stop = f"no development improvement in {a.patience} evaluations"
                break
        if a.max_minutes and state["seconds"] > a.max_minutes * 60:
            stop = f"time limit {a.max_minutes} min"
            if state["evals"] and state["evals"][-1]["step"] == state["step"]:
                break
            acc, dl = evaluate()
            state["evals"].append({"step": state["step"], "dev_closed_acc": acc, "dev_loss": dl})
            if state["best"] is None or acc > state["best"]["dev_closed_acc"]:
                state["best"] = {"step": state["step"], "dev_closed_acc": acc, "dev_loss": dl}
                save_parts(pm, run / "best", info={**info, "step": state["step"], "dev_closed_acc": acc,
                                                   "dev_loss": dl, "train_seconds": round(state["seconds"])})
            checkpoint()
            break
    state["stopped"] = stop or "max steps"
    checkpoint()
    print(f"done: {state['stopped']}; best {state['best']}; {state['seconds'] / 60:.1f} min", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
