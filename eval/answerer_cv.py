"""Choose ragmed-answerer variants on the TRAINING part only: 5-fold cross-validation by image over the split's
training images (train + dev slice, 220 images; the evaluation images are never read), frozen image features.

    python eval/answerer_cv.py --tower TOWER --work WORK [--out eval/results/answerer_cv.json] SPEC...

SPEC is a JSON object: {"mode": M, "kind": K, "aux_w": w, "epochs": E, "seed": s, "zdim": d, "imgdrop": p}
- mode "qonly": the question-only head; "small": the image squeezed to ``zdim`` numbers (the shipped answerer's
  design); "aux": the image enters only as the probabilities of organ (3) and modality (3) heads trained as auxiliary
  targets (answers_common.image_labels, ``aux_w``); "agree": "aux" + cos(question, label phrase) and its product with
  the label's probability (model.LABEL_PHRASES); "att": question-conditioned attention over the tower's 4x4 feature
  map + the squeezed vector; "ft": the tower's last stage and head fine-tuned (lr 2e-4) on 8 precomputed augmented
  views per image (shift ±6 px, luma gain ±10 %), then squeezed;
- kind (image features for small / aux): "emb" (tower embedding), "map" (2x2-pooled feature map), "hand" (generic
  descriptors: luma histogram, 8x8 thumbnail, content box), joined with "+".
Per spec: mean over folds of held-out closed accuracy (argmax over the question's choices) at the best epoch (the same
epoch for every fold), the same with a Gaussian-noise image (eval/train_vlm.py's noise_like), open in-vocabulary
accuracy. Held-out per-question correctness is kept in WORK for paired comparisons.
"""
import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import answers_common as A  # noqa: E402
import train_answerer as TA  # noqa: E402
import train_vlm as T  # noqa: E402

from ragmed.eval.normalize import normalize_answer  # noqa: E402
from ragmed.generate.chat import closed_choices  # noqa: E402

W = Path(".")
TOWER = Path(".")

def hand_feats(arr):
    """arr (n,S,S,3) uint8 letterboxed Y'CbCr? -> generic global descriptors."""
    out = []
    for a in arr:
        y = a[..., 0].astype(np.float32) / 255
        area = (a[..., 0] > 0) | (a[..., 1] != 128) | (a[..., 2] != 128)
        rows, cols = area.any(1), area.any(0)
        hfrac, wfrac = rows.mean(), cols.mean()
        v = y[area] if area.any() else y.ravel()
        h = np.histogram(v, bins=16, range=(0, 1))[0] / max(len(v), 1)
        th = y.reshape(8, 14, 8, 14).mean((1, 3)).ravel()
        out.append(np.concatenate([np.sqrt(h), th, [hfrac, wfrac, v.mean(), v.std(), (v < 0.05).mean(), (v > 0.9).mean()]]))
    return np.asarray(out, np.float32)

def _tower():
    """The frozen tower (trained without the evaluation images) and its preprocessing."""
    from safetensors.torch import load_file
    from ragmed.encoders.tower import PreprocessConfig, TowerConfig, build_tower
    tcfg = TowerConfig.from_dict(json.loads((TOWER / 'config.json').read_text())['tower'])
    tower = build_tower(tcfg)
    tower.load_state_dict(load_file(str(TOWER / 'model.safetensors')))
    tower.eval()
    return tower, PreprocessConfig.from_dict(json.loads((TOWER / 'preprocess.json').read_text()))


def main():
    tr, dv, _ = A.split_rows()
    rows = tr + dv
    vocab = TA.make_vocab(rows, 2)
    index = {v: i for i, v in enumerate(vocab)}
    qv, ims = TA.features(rows, W / 'features_train.npz')
    keep = [r for r in rows if normalize_answer(r['answer']) in index]
    names = sorted({r['image'][1] for r in rows})
    pos = {n: i for i, n in enumerate(names)}
    arr = np.stack([ims[n] for n in names])
    rng = np.random.default_rng(0)
    narr = T.noise_like(arr, rng)
    cache = W / 'cvfeats.pt'
    if cache.exists():
        F = torch.load(cache)
    else:
        from ragmed.encoders.tower import to_tensor_batch
        tower, pc = _tower()
        F = {}
        with torch.no_grad():
            for tag, a in (('real', arr), ('noise', narr)):
                px = to_tensor_batch(a, pc)
                f = tower.features(px)
                F[tag] = {'emb': tower(px), 'map': f, 'hand': torch.from_numpy(hand_feats(a))}
        torch.save(F, cache)
    print('map', F['real']['map'].shape, file=sys.stderr)
    c2 = W / 'cvstage2.pt'
    if not c2.exists():
        from ragmed.encoders.tower import to_tensor_batch
        tower, pc = _tower()
        g = torch.Generator().manual_seed(0)
        S = {}
        with torch.no_grad():
            px = to_tensor_batch(arr, pc)
            views = [tower.features[:3](px)]
            for _ in range(7):
                views.append(tower.features[:3](TA.augment(px.clone(), g)))
            S['real'] = torch.stack(views, 1)  # n, V, 128, 7, 7
            S['noise'] = tower.features[:3](to_tensor_batch(narr, pc))
        torch.save(S, c2)
    F['stage2'] = torch.load(c2)
    lab = A.image_labels(rows)
    org = torch.tensor([lab[n][0] for n in names])
    mod = torch.tensor([lab[n][1] for n in names])
    print('organ', np.bincount(org.numpy()), 'modality', {m: int((mod == i).sum()) for i, m in enumerate(A.MODALITIES)},
          'unknown', int((mod < 0).sum()), file=sys.stderr)
    q = torch.from_numpy(np.stack([qv[r['question']] for r in keep]).astype(np.float32))
    y = torch.tensor([index[normalize_answer(r['answer'])] for r in keep])
    ii = torch.tensor([pos[r['image'][1]] for r in keep])
    closed = np.array([r['closed'] for r in keep])
    choices = [[index[c] for c in closed_choices(r['question']) if c in index] if r['closed'] else [] for r in keep]
    folds = np.random.default_rng(1).permutation(len(names)) % 5
    from ragmed.generate.answerer.model import LABEL_PHRASES
    from ragmed.encoders import create_encoder
    phr = torch.from_numpy(np.asarray(create_encoder('minilm').encode_texts(LABEL_PHRASES), dtype=np.float32))
    phr = nn.functional.normalize(phr, dim=-1)
    orows = [r for r in rows if not r['closed']]  # every open question, also those whose answer is not in the vocabulary
    oq = torch.from_numpy(np.stack([qv[r['question']] for r in orows]).astype(np.float32))
    oii = torch.tensor([pos[r['image'][1]] for r in orows])
    return dict(phr=phr, vocab=vocab, F=F, org=org, mod=mod, q=q, y=y, ii=ii, closed=closed, choices=choices, folds=folds, names=names,
                rows=rows, qv=qv, orows=orows, oq=oq, oii=oii, rules={})


VARIANTS = {  # name: (plane head, criterion, question types answered from the heads)
    'image_level': (False, 'f1', A.IMAGE_LEVEL),
    'image_level_recall': (False, 'recall', A.IMAGE_LEVEL),
    'image_level_organ_plane': (False, 'f1', ('ORGAN', 'PLANE')),
    'image_level_recall_organ_plane': (False, 'recall', ('ORGAN', 'PLANE')),
}


def image_level_rule(D, k, plane=False, criterion='f1', types=A.IMAGE_LEVEL):
    """Fold k's image-level answers for its held-out open questions (None where the question-type classifier says
    the question is not image-level, or not of ``types``), fitted on the other folds' rows and images only
    (answers_common.fit_image_level; one fit per fold serves every criterion and type subset)."""
    from ragmed.generate.answerer.model import ImageLevel
    fold_of = {n: D['folds'][i] for i, n in enumerate(D['names'])}
    if (k, plane) not in D['rules']:
        train_rows = [r for r in D['rows'] if fold_of[r['image'][1]] != k]
        emb = {n: D['F']['real']['emb'][i].numpy() for i, n in enumerate(D['names'])}
        D['rules'][(k, plane)] = A.fit_image_level(train_rows, D['qv'], emb, D['vocab'], plane=plane)
    params = dict(D['rules'][(k, plane)], criterion=criterion)
    params['head_of_type'] = {t: h for t, h in params['head_of_type'].items() if t in types}
    il = ImageLevel(params)
    te = [i for i, r in enumerate(D['orows']) if fold_of[r['image'][1]] == k]
    E = np.stack([D['F']['real']['emb'][D['oii'][i]].numpy() for i in te])
    types_, _ = il.question_types(D['oq'][te].numpy())
    truth = [A.question_type(D['orows'][i]) for i in te]
    return te, il.answers(D['oq'][te].numpy(), E), float(np.mean([a == b for a, b in zip(types_, truth)]))


def open_recall(preds, golds):
    from ragmed.eval.vqa import token_scores
    return np.array([token_scores(p, g)['recall'] for p, g in zip(preds, golds)])

class Net(nn.Module):
    def __init__(self, V, nvocab, img_in, mode, hidden=256, zdim=16, imgdrop=0.3, drop=0.3, names=None):
        super().__init__()
        self.names = names  # (6, 384) label-phrase vectors: "agree" mode adds cos(question, phrase) and its product
        extra = 12 if names is not None else 0
        self.mode, self.imgdrop = mode, imgdrop
        self.q = nn.Sequential(nn.Linear(384, hidden), nn.LayerNorm(hidden), nn.GELU())
        if mode == 'qonly':
            self.head = nn.Sequential(nn.Dropout(drop), nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(drop), nn.Linear(hidden, nvocab)); return
        self.norm = nn.LayerNorm(img_in)
        self.enc = nn.Sequential(nn.Dropout(0.2), nn.Linear(img_in, 64), nn.GELU())
        self.aux_org = nn.Linear(64, 3); self.aux_mod = nn.Linear(64, 3)
        if mode == 'ft':
            tw, _ = _tower()
            self.stage3, self.thead = tw.features[3], tw.head
            self.small = nn.Sequential(nn.Linear(64, zdim), nn.LayerNorm(zdim), nn.GELU())
        elif mode == 'att':
            self.key = nn.Linear(256, 64); self.val = nn.Linear(256, 64); self.qk = nn.Linear(hidden, 64)
            self.small = nn.Sequential(nn.Linear(64 + 64, zdim), nn.LayerNorm(zdim), nn.GELU())
        elif mode == 'aux':
            zdim = 6
        else:
            self.small = nn.Sequential(nn.Linear(64, zdim), nn.LayerNorm(zdim), nn.GELU())
        self.qs = nn.Linear(hidden, zdim)
        self.head = nn.Sequential(nn.Dropout(drop), nn.Linear(hidden + 2 * zdim + extra, hidden), nn.GELU(), nn.Dropout(drop), nn.Linear(hidden, nvocab))
    def forward(self, qv, x):
        h = self.q(qv)
        if self.mode == 'qonly':
            return self.head(h), None, None
        if self.mode == 'ft':
            self.stage3.eval()
            f = self.stage3(x)
            x = self.thead(torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3)), nn.functional.adaptive_avg_pool2d(f, 2).flatten(1)], 1))
        if self.mode == 'att':
            xe, m = x
            e = self.enc(self.norm(xe))
            m = m.flatten(2).transpose(1, 2)  # b, n, 256
            k, v = self.key(m), self.val(m)
            att = torch.softmax((k @ self.qk(h).unsqueeze(-1)).squeeze(-1) / 8.0, -1)
            va = (v * att.unsqueeze(-1)).sum(1)
            z = self.small(torch.cat([e, va], 1))
            if self.training and self.imgdrop:
                z = z * (torch.rand(z.shape[0], 1) >= self.imgdrop).float()
            return self.head(torch.cat([h, z, self.qs(h) * z], 1)), None, None
        e = self.enc(self.norm(x))
        lo, lm = self.aux_org(e), self.aux_mod(e)
        z = torch.cat([lo.softmax(-1), lm.softmax(-1)], 1) if self.mode == 'aux' else self.small(e)
        if self.training and self.imgdrop:
            z = z * (torch.rand(z.shape[0], 1) >= self.imgdrop).float()
        parts = [h, z, self.qs(h) * z]
        if self.names is not None:
            sim = nn.functional.normalize(qv, dim=-1) @ self.names.T * 5.0
            parts += [sim, sim * z]
        return self.head(torch.cat(parts, 1)), lo, lm

def img_input(F, tag, kind):
    d = F[tag]
    parts = []
    for k in kind.split('+'):
        if k == 'emb': parts.append(d['emb'])
        elif k == 'map': parts.append(nn.functional.adaptive_avg_pool2d(d['map'], 2).flatten(1))
        elif k == 'hand': parts.append(d['hand'])
    return torch.cat(parts, 1)

class Aug:
    def __init__(self, v): self.v, self.training = v, True
    def __getitem__(self, i):
        if self.training:
            return self.v[i, torch.randint(0, self.v.shape[1], (len(i),))]
        return self.v[i, 0]

class Pair:
    def __init__(self, a, b): self.a, self.b, self.dim = a, b, a.shape[1]
    def __getitem__(self, i): return (self.a[i], self.b[i])

def run(D, mode, kind='emb', aux_w=0.0, epochs=25, seed=0, zdim=16, imgdrop=0.3):
    X = img_input(D['F'], 'real', kind); xdim = X.shape[1]; XN = img_input(D['F'], 'noise', kind)
    if mode == 'ft':
        X, XN = Aug(D['F']['stage2']['real']), D['F']['stage2']['noise']; xdim = 384
    if mode == 'att':
        X, XN = Pair(X, D['F']['real']['map']), Pair(XN, D['F']['noise']['map'])
    res = np.zeros((5, epochs, 3)); okq = np.zeros((epochs, 2, len(D['y'])))  # closed real, closed noise, open
    opred = np.zeros((epochs, len(D['orows'])), dtype=np.int64)  # top answer of every held-out open question
    for k in range(5):
        torch.manual_seed(seed + k)
        trm = D['folds'][D['ii'].numpy()] != k
        tri, tei = np.where(trm)[0], np.where(~trm)[0]
        net = Net(None, len(D['vocab']), xdim, 'aux' if mode == 'agree' else mode, zdim=zdim, imgdrop=imgdrop,
                  names=D['phr'] if mode == 'agree' else None)
        if mode == 'ft':
            tp = list(net.stage3.parameters()) + list(net.thead.parameters()); ids = {id(p) for p in tp}
            opt = torch.optim.AdamW([{'params': [p for p in net.parameters() if id(p) not in ids], 'lr': 1e-3}, {'params': tp, 'lr': 2e-4}], weight_decay=1e-2)
        else:
            opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
        g = np.random.default_rng(seed + k)
        for ep in range(epochs):
            net.train()
            if isinstance(X, Aug): X.training = True
            perm = g.permutation(tri)
            for i in range(0, len(perm), 32):
                b = perm[i:i + 32]; bi = D['ii'][b]
                out, lo, lm = net(D['q'][b], X[bi])
                loss = nn.functional.cross_entropy(out, D['y'][b], label_smoothing=0.05)
                if aux_w and lo is not None and mode in ('aux', 'agree'):
                    loss = loss + aux_w * nn.functional.cross_entropy(lo, D['org'][bi])
                    m = D['mod'][bi]
                    if (m >= 0).any():
                        loss = loss + aux_w * nn.functional.cross_entropy(lm[m >= 0], m[m >= 0])
                opt.zero_grad(); loss.backward(); opt.step()
            net.eval()
            if isinstance(X, Aug): X.training = False
            with torch.no_grad():
                for j, XX in enumerate((X, XN)):
                    lg = net(D['q'][tei], XX[D['ii'][tei]])[0]
                    pred = [c[int(torch.argmax(l[c]))] if c else int(torch.argmax(l)) for l, c in zip(lg, [D['choices'][t] for t in tei])]
                    ok = np.array(pred) == D['y'][tei].numpy(); okq[ep, j, tei] = ok
                    cl = D['closed'][tei]
                    res[k, ep, j] = ok[cl].mean()
                    if j == 0: res[k, ep, 2] = ok[~cl].mean()
                ote = np.where(D['folds'][D['oii'].numpy()] == k)[0]
                if len(ote):
                    opred[ep, ote] = net(D['oq'][ote], X[D['oii'][ote]])[0].argmax(-1).numpy()
    m = res.mean(0)
    be = int(np.argmax(m[:, 0]))
    np.save(W / ('ok_' + '_'.join(f'{a}{b}' for a, b in sorted(dict(mode=mode, kind=kind, aux_w=aux_w, seed=seed, zdim=zdim, imgdrop=imgdrop).items())).replace('+', '') + '.npy'), okq[be])
    golds = [r['answer'] for r in D['orows']]
    base = [D['vocab'][j] for j in opred[be]]
    rec = open_recall(base, golds)
    extra = {'open_recall': round(float(rec.mean()), 4)}
    for tag, (plane, crit, types) in VARIANTS.items():
        ruled, fired, tacc = list(base), np.zeros(len(base), bool), []
        for k in range(5):
            te, ans, acc = image_level_rule(D, k, plane, crit, types)
            tacc.append(acc)
            for i, a in zip(te, ans):
                if a is not None:
                    ruled[i], fired[i] = a[0], True
        r2 = open_recall(ruled, golds)
        d = r2 - rec
        g = np.random.default_rng(0)  # bootstrap over images of the paired gain
        img = D['oii'].numpy(); u = np.unique(img); by = {v: np.where(img == v)[0] for v in u}
        bs = [np.mean(np.concatenate([d[by[v]] for v in g.choice(u, len(u))])) for _ in range(1000)]
        extra[tag] = {'open_recall': round(float(r2.mean()), 4), 'gain': round(float(d.mean()), 4),
                      'gain_ci95': [round(float(np.percentile(bs, 2.5)), 4), round(float(np.percentile(bs, 97.5)), 4)],
                      'fired': int(fired.sum()), 'recall_where_fired_before_after': [round(float(rec[fired].mean()), 4), round(float(r2[fired].mean()), 4)] if fired.any() else None,
                      'question_type_accuracy_heldout_open': round(float(np.mean(tacc)), 4)}
    np.save(W / ('open_' + '_'.join(f'{a}{b}' for a, b in sorted(dict(mode=mode, kind=kind, aux_w=aux_w, seed=seed, zdim=zdim, imgdrop=imgdrop).items())).replace('+', '') + '.npy'), opred[be])
    return {**extra, 'best_epoch': be + 1, 'closed': round(m[be, 0], 4), 'closed_noise': round(m[be, 1], 4), 'open_invocab': round(m[be, 2], 4),
            'per_fold_closed': res[:, be, 0].round(3).tolist(), 'curve_closed': m[:, 0].round(3).tolist()}

def cli(argv=None) -> int:
    global W, TOWER
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tower", required=True, help="the tower trained without the evaluation images")
    ap.add_argument("--work", required=True, help="feature caches and per-question correctness")
    ap.add_argument("--out", default=None, help="append the results to this JSON file")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("specs", nargs="+")
    a = ap.parse_args(argv)
    W, TOWER = Path(a.work), Path(a.tower)
    W.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(a.threads)
    D = main()
    out = Path(a.out) if a.out else None
    res = json.loads(out.read_text()) if out and out.exists() else {
        "task": "answerer-variants-cv", "split": A.SPLIT.name,
        "protocol": "5-fold cross-validation by image over the training part (train + dev slice, 220 images); the "
                    "evaluation images are never read; closed accuracy = mean over folds at the best common epoch",
        "runs": []}
    for s in a.specs:
        spec = json.loads(s)
        t = time.time()
        r = run(D, **spec)
        row = {"spec": spec, **r, "seconds": round(time.time() - t),
               "command": "python eval/answerer_cv.py --tower TOWER --work WORK " + f"'{s}'"}
        print(json.dumps({k: v for k, v in row.items() if k not in ("curve_closed", "command")}), flush=True)
        if out:
            res["runs"].append(row)
            out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(cli())
