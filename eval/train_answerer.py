"""Train ``ragmed-answerer`` (ragmed/generate/answerer): image + question → answer, a classic Med-VQA classifier.

    python eval/train_answerer.py --tower TOWER_DIR --out RUN_DIR [--resume] [--threads 2] [--seed 0]
    python eval/train_answerer.py ... --question-only        # the same head without the image (the baseline)
    python eval/train_answerer.py ... --freeze-tower --aux [--agree]   # image only as organ + modality heads
    python eval/train_answerer.py --add-image-level WEIGHTS [--plane] --work WORK  # image-level heads beside WEIGHTS

Data: the training part of the committed VQA-RAD split by image (eval/splits/vqa_rad_vlm_seed0.json, CC0) only; its
dev slice (10 % of the training images, eval/train_vlm.py's dev_images, seed 0) is held out of the gradient and
decides when to stop; the evaluation images are never read. TOWER_DIR is the ragmed CNN tower trained WITHOUT the
evaluation images (eval/train_default_encoder.py --holdout-split); it initialises the image branch, which is then
fine-tuned end to end (lower learning rate). Questions: frozen all-MiniLM-L6-v2 vectors (ragmed's ``minilm``).
Vocabulary: yes, no, and the normalised open answers that occur at least ``--min-count`` times in the training part.

Seeded (torch + numpy), resumable (RUN_DIR/ckpt.pt each epoch), progress on stderr, RUN_DIR/history.json;
RUN_DIR/best is the weights directory of the best dev epoch (stopping rule: dev accuracy over closed + in-vocabulary
answers, patience ``--patience`` epochs).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import answers_common as A  # noqa: E402
import train_vlm as T  # noqa: E402


def features(rows: list[dict], cache: Path, size: int = 112) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Question vectors (by question text) and letterboxed images (by image name), cached in one npz."""
    from ragmed.encoders import create_encoder
    from ragmed.encoders.tower import letterbox_uint8

    have_q, have_i = {}, {}
    if cache.exists():
        d = np.load(cache, allow_pickle=False)
        have_q = dict(zip(d["q_text"].tolist(), d["q_vec"]))
        have_i = dict(zip(d["i_name"].tolist(), d["i_arr"]))
    qs = sorted({r["question"] for r in rows} - set(have_q))
    ims = sorted({r["image"][1] for r in rows} - set(have_i))
    if qs:
        enc = create_encoder("minilm")
        for q, v in zip(qs, enc.encode_texts(qs)):
            have_q[q] = np.asarray(v, dtype=np.float32)
    for n in ims:
        have_i[n] = letterbox_uint8(T.vqa_image(n).pixels, size)
    if qs or ims:
        cache.parent.mkdir(parents=True, exist_ok=True)
        kq, ki = sorted(have_q), sorted(have_i)
        np.savez(cache, q_text=np.array(kq), q_vec=np.stack([have_q[k] for k in kq]),
                 i_name=np.array(ki), i_arr=np.stack([have_i[k] for k in ki]))
    return have_q, have_i


def make_vocab(rows: list[dict], min_count: int) -> list[str]:
    from ragmed.eval.normalize import normalize_answer

    c = Counter(normalize_answer(r["answer"]) for r in rows if not r["closed"])
    return ["yes", "no"] + sorted(a for a, n in c.items() if n >= min_count and a not in ("yes", "no"))


def tensors(rows, qv, ims, index):
    from ragmed.eval.normalize import normalize_answer

    keep = [r for r in rows if normalize_answer(r["answer"]) in index]
    q = np.stack([qv[r["question"]] for r in keep]).astype(np.float32)
    names = sorted({r["image"][1] for r in keep})
    pos = {n: i for i, n in enumerate(names)}
    img = np.stack([ims[n] for n in names])
    iidx = np.array([pos[r["image"][1]] for r in keep])
    y = np.array([index[normalize_answer(r["answer"])] for r in keep])
    closed = np.array([r["closed"] for r in keep])
    return keep, q, img, iidx, y, closed


def augment(x, gen):
    """Light, label-safe augmentation of a normalised batch: a shift of up to 6 px and a luma gain ±10 % (no flips:
    laterality questions)."""
    import torch

    b = x.shape[0]
    dx, dy = (torch.randint(-6, 7, (2,), generator=gen)).tolist()
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    gain = 1.0 + 0.1 * (torch.rand(b, 1, 1, generator=gen) * 2 - 1)
    x[:, 0] = x[:, 0] * gain
    return x


def predict_closed(model, q, px, choices_idx, batch=128, feats=None):
    """argmax over each question's allowed choices (list of vocab indices)."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(q), batch):
            if feats is not None:
                logits = model(q[i:i + batch], feats=(feats[0][i:i + batch], feats[1][i:i + batch]))
            else:
                logits = model(q[i:i + batch], None if px is None else px[i:i + batch])
            for j, lg in enumerate(logits):
                c = choices_idx[i + j]
                out.append(c[int(torch.argmax(lg[c]))] if c else int(torch.argmax(lg)))
    return out


def add_image_level(weights: Path, work: Path, plane: bool, argv, types: tuple[str, ...] = A.IMAGE_LEVEL,
                    criterion: str = "f1") -> Path:
    """Fit the image-level answerer (answers_common.fit_image_level: question-type classifier, organ / modality
    [/ plane] heads on the answerer's own frozen tower embeddings, answer tables) on the whole training part (train +
    dev slice; nothing here is chosen by the dev slice) and write it beside the weights (model.IMAGE_LEVEL_FILE)."""
    from ragmed.generate.answerer.model import IMAGE_LEVEL_FILE, Answerer

    tr, dv, _ = A.split_rows()
    rows = tr + dv
    ans = Answerer(weights)
    if not ans.image_branch:
        raise SystemExit("--add-image-level needs an answerer with an image branch")
    qv, ims = features(rows, work / "features_train.npz")
    names = sorted({r["image"][1] for r in rows})
    emb = dict(zip(names, ans.embeddings(np.stack([ims[n] for n in names]))))
    params = A.fit_image_level(rows, qv, emb, ans.vocab, plane=plane, types=types, criterion=criterion)
    params["fitted_on"] = (f"VQA-RAD (CC0) rows of the training part of {A.SPLIT.name} (train + dev slice: "
                           f"{len(rows)} rows, {len(names)} images); question types from VQA-RAD's question_type, "
                           "organ from image_organ, modality / plane from the same images' training questions")
    params["command"] = "python eval/train_answerer.py " + " ".join(
        x if not x.startswith("/") else Path(x).name for x in (argv or sys.argv[1:]))
    out = Path(weights) / IMAGE_LEVEL_FILE
    out.write_text(json.dumps(params))
    print("wrote", out, {h: d["n_images"] for h, d in params["heads"].items()},
          file=sys.stderr)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--add-image-level", metavar="WEIGHTS", default=None,
                    help="fit the image-level heads for open questions about the whole image and write them beside "
                         "the weights directory WEIGHTS (image_level.json); --work holds the feature cache")
    ap.add_argument("--plane", action="store_true", help="with --add-image-level: a plane head too")
    ap.add_argument("--types", default=",".join(A.IMAGE_LEVEL),
                    help="with --add-image-level: the question types the heads answer (comma-separated)")
    ap.add_argument("--criterion", choices=("f1", "recall"), default="f1",
                    help="with --add-image-level: the answer table's expected token score")
    ap.add_argument("--work", default=None)
    ap.add_argument("--tower", help="tower trained without the evaluation images")
    ap.add_argument("--out")
    ap.add_argument("--split", default=str(A.SPLIT))
    ap.add_argument("--question-only", action="store_true")
    ap.add_argument("--freeze-tower", action="store_true",
                    help="keep the tower as trained (its features computed once); train the head only")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--tower-lr", type=float, default=2e-4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--img-dim", type=int, default=0, help=">0: the compact image branch (see build_model)")
    ap.add_argument("--img-dropout", type=float, default=0.0)
    ap.add_argument("--knn", action="store_true", help="add the kNN answer prior over the training pairs (frozen tower)")
    ap.add_argument("--align", action="store_true", help="compact branch: add the question-image agreement")
    ap.add_argument("--aux", action="store_true",
                    help="the image enters only as the probabilities of organ (3) and modality (3), trained as "
                         "auxiliary targets derived from the training part (answers_common.image_labels)")
    ap.add_argument("--aux-weight", type=float, default=1.0)
    ap.add_argument("--agree", action="store_true",
                    help="with --aux: the head also reads cos(question, label phrase) and its product with the image's "
                         "label probability (model.LABEL_PHRASES)")
    ap.add_argument("--weight-decay", type=float, default=1e-2)
    ap.add_argument("--min-count", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    if a.add_image_level:
        add_image_level(Path(a.add_image_level), Path(a.work or Path(a.add_image_level).parent), a.plane, argv,
                        tuple(t.strip().upper() for t in a.types.split(",") if t.strip()), a.criterion)
        return 0
    if not a.tower or not a.out:
        ap.error("--tower and --out are required")

    import torch
    from safetensors.torch import load_file

    from ragmed.generate.answerer.model import build_model, save
    from ragmed.generate.chat import closed_choices
    from ragmed.eval.normalize import normalize_answer

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    run = Path(a.out)
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tr, dv, _ = A.split_rows(Path(a.split))  # the evaluation rows are not used here
    vocab = make_vocab(tr + dv, a.min_count)
    index = {v: i for i, v in enumerate(vocab)}
    qv, ims = features(tr + dv, run.parent / "features_train.npz")
    keep, q, img, iidx, y, closed = tensors(tr, qv, ims, index)
    dkeep, dq, dimg, diidx, dy, dclosed = tensors(dv, qv, ims, index)
    tower_dir = Path(a.tower)
    tcfg = json.loads((tower_dir / "config.json").read_text())["tower"]
    pre = json.loads((tower_dir / "preprocess.json").read_text())
    model = build_model(len(vocab), tcfg, hidden=a.hidden, dropout=a.dropout, image_branch=not a.question_only,
                        img_dim=a.img_dim, img_dropout=a.img_dropout, align=a.align,
                        knn=len(tr) if a.knn else 0, aux=(3, 3) if a.aux else (), agree=a.aux and a.agree)
    if a.aux and a.agree:
        from ragmed.encoders import create_encoder
        from ragmed.generate.answerer.model import LABEL_PHRASES

        model.label_vecs.copy_(torch.from_numpy(np.asarray(create_encoder("minilm").encode_texts(LABEL_PHRASES),
                                                            dtype=np.float32)))
    if not a.question_only:
        model.tower.load_state_dict(load_file(str(tower_dir / "model.safetensors")))
    from ragmed.encoders.tower import PreprocessConfig, to_tensor_batch

    pcfg = PreprocessConfig.from_dict(pre)
    px = None if a.question_only else to_tensor_batch(img, pcfg)
    dpx = None if a.question_only else to_tensor_batch(dimg, pcfg)[torch.from_numpy(diidx)]
    frozen = dfeats = None
    if a.freeze_tower and not a.question_only:
        model.tower.eval()
        for p_ in model.tower.parameters():
            p_.requires_grad_(False)
        with torch.no_grad():
            frozen = model.image_features(px)
            dfeats = model.image_features(dpx)
        if a.knn:
            model.knn = len(keep)
            model.set_memory(torch.from_numpy(q), frozen[1], torch.from_numpy(iidx), torch.from_numpy(y))
    tower_params = list(model.tower.parameters()) if not a.question_only and not a.freeze_tower else []
    ids = {id(p) for p in model.tower.parameters()} if not a.question_only else set()
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids], "lr": a.lr}]
    if tower_params:
        groups.append({"params": tower_params, "lr": a.tower_lr})
    opt = torch.optim.AdamW(groups, weight_decay=a.weight_decay)
    dchoices = [[index[c] for c in closed_choices(r["question"]) if c in index] if r["closed"] else []
                for r in dkeep]
    hist, start, best, bad = [], 0, -1.0, 0
    ck = run / "ckpt.pt"
    if a.resume and ck.exists():
        s = torch.load(ck, weights_only=False)
        model.load_state_dict(s["model"])
        opt.load_state_dict(s["opt"])
        gen.set_state(s["gen"])
        rng = s["rng"]
        hist, start, best, bad = s["hist"], s["epoch"], s["best"], s["bad"]
        print(f"resumed at epoch {start}", file=sys.stderr)
    qt, yt = torch.from_numpy(q), torch.from_numpy(y)
    aux_y = None
    if a.aux:
        labels = A.image_labels(tr)  # the training rows only (not dev)
        names = sorted({r["image"][1] for r in keep})  # = tensors()' image order
        aux_y = [torch.tensor([labels[nm][k] for nm in names]) for k in range(2)]
        print(f"aux labels: organ {np.bincount(aux_y[0].numpy()).tolist()}, modality known for "
              f"{int((aux_y[1] >= 0).sum())} of {len(names)} images", file=sys.stderr)
    dqt = torch.from_numpy(dq)
    n = len(keep)
    print(f"{n} training / {len(dkeep)} dev rows in vocabulary ({len(vocab)} answers; {len(tr)} + {len(dv)} rows "
          f"before); {len(set(iidx.tolist()))} training images", file=sys.stderr, flush=True)
    for epoch in range(start, a.epochs):
        model.train()
        if frozen is not None:
            model.tower.eval()  # batch-norm statistics stay as trained
        te = time.perf_counter()
        perm = rng.permutation(n)
        tot = 0.0
        for i in range(0, n, a.batch):
            b = perm[i:i + a.batch]
            if frozen is not None:
                bi = torch.from_numpy(iidx[b])
                out = model(qt[b], feats=(frozen[0][bi], frozen[1][bi]), own=bi)
            else:
                bp = None if px is None else augment(px[torch.from_numpy(iidx[b])].clone(), gen)
                out = model(qt[b], bp)
            loss = torch.nn.functional.cross_entropy(out, yt[b], label_smoothing=0.05)
            if aux_y is not None:
                bi = torch.from_numpy(iidx[b])
                for lg, lab in zip(model.aux_logits, aux_y):
                    t = lab[bi]
                    if (t >= 0).any():
                        loss = loss + a.aux_weight * torch.nn.functional.cross_entropy(lg[t >= 0], t[t >= 0])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(b)
        pred = predict_closed(model, dqt, dpx, dchoices, feats=dfeats)
        ok = np.array(pred) == dy
        dev_closed = float(ok[dclosed].mean())
        dev_open = float(ok[~dclosed].mean()) if (~dclosed).any() else 0.0
        dev_all = float(ok.mean())
        hist.append({"epoch": epoch + 1, "loss": round(tot / n, 4), "dev_closed_acc": round(dev_closed, 4),
                     "dev_open_invocab_acc": round(dev_open, 4), "dev_acc": round(dev_all, 4),
                     "seconds": round(time.perf_counter() - te, 1)})
        print(json.dumps(hist[-1]), file=sys.stderr, flush=True)
        if dev_all > best:
            best, bad = dev_all, 0
            cfg = {"name": run.name, "vocab": vocab,
                   "arch": {"hidden": a.hidden, "qdim": 384, "image_branch": not a.question_only,
                            "dropout": a.dropout, "tower_frozen": bool(a.freeze_tower),
                            "img_dim": a.img_dim, "img_dropout": a.img_dropout, "align": a.align,
                            "knn": len(keep) if a.knn else 0, **({"aux": [3, 3], "aux_labels": [
                                A.ORGANS, A.MODALITIES], "agree": bool(a.agree)} if a.aux else {})},
                   "tower": tcfg, "preprocess": pre, "question_encoder": "minilm (all-MiniLM-L6-v2, frozen)",
                   "epoch": epoch + 1, "dev": hist[-1],
                   "trained_on": "VQA-RAD (CC0) question-answer pairs of the training images of "
                                 f"{Path(a.split).name} minus its dev slice ({n} rows, "
                                 f"{len(set(iidx.tolist()))} images); image branch initialised from "
                                 f"{json.loads((tower_dir / 'config.json').read_text()).get('id')}",
                   "command": "python eval/train_answerer.py " + " ".join(
                       x if not x.startswith("/") else Path(x).name for x in (argv or sys.argv[1:]))}
            save(model, run / "best", cfg)
        else:
            bad += 1
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "rng": rng,
                    "hist": hist, "epoch": epoch + 1, "best": best, "bad": bad}, ck)
        (run / "history.json").write_text(json.dumps(hist, indent=1))
        if bad >= a.patience:
            print(f"stopping: no dev gain for {a.patience} epochs (best {best:.4f})", file=sys.stderr)
            break
    print(f"done in {time.perf_counter() - t0:.0f}s; best dev accuracy {best:.4f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
