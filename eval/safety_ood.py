"""Out-of-distribution refusal of the DEFAULT pipeline's image check (issue 12, item 4).

    python eval/safety_ood.py --out eval/results/safety_ood.json [--per-folder 150] [--before]
    python eval/safety_ood.py --calibrate --per-folder 600 --seed 1   # the grey-photograph thresholds (medical only)

Two sets:

- **refuse** (every image must be refused): blank frames (black, white, grey; 8 sizes), images of 8×8 pixels or
  fewer, noise (uniform, Gaussian, colour, salt-and-pepper, smoothed), scikit-image's bundled natural photographs
  (astronaut, camera, cat, coffee, coins, moon, rocket, clock, motorcycle, Hubble deep field, brick, grass, gravel,
  horse), the photographs that ship with scikit-learn (china, flower) and matplotlib (grace_hopper), and rendered
  text pages (scikit-image's ``page`` and ``text``, and pages of text drawn with PIL);
- **accept** (≥ 99 % must pass): real medical images in ``$RAGMED_DATA`` (default ``../shared/data``): VQA-RAD, the
  decodable DICOM samples (including VL colour photographs), dermoscopy, lung ultrasound, histopathology, brain MRI,
  blood smears, PneumoniaMNIST and BreastMNIST 28-pixel images; at most ``--per-folder`` per folder, seeded.

Every image goes through ``ragmed.io.load_image`` from a real file (arrays are written as PNG first). ``--before``
measures the check the default pipeline ran before issue 12 (none: it refused nothing), for the side-by-side table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RAGMED_DATA", REPO.parent / "shared" / "data"))


def _png(arr: np.ndarray, path: Path) -> Path:
    from PIL import Image

    a = np.asarray(arr)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    Image.fromarray(a).save(path)
    return path


def refuse_set(work: Path, seed: int = 0) -> list[tuple[str, str, Path]]:
    """(kind, name, file) of every image that must be refused."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out: list[tuple[str, str, Path]] = []
    d = work / "refuse"
    d.mkdir(parents=True, exist_ok=True)
    for size in (16, 28, 64, 128, 256, 512, 1024, 300):
        for name, v in (("black", 0), ("white", 255), ("grey", 128)):
            out.append(("blank", f"{name}-{size}", _png(np.full((size, size), v, np.uint8), d / f"blank-{name}-{size}.png")))
    out.append(("blank", "rgb-red-256", _png(np.tile(np.array([200, 30, 30], np.uint8), (256, 256, 1)), d / "blank-red.png")))
    for s in (1, 2, 4, 8):
        out.append(("tiny", f"random-{s}x{s}", _png(rng.integers(0, 256, (s, s), dtype=np.uint8), d / f"tiny-{s}.png")))
        out.append(("tiny", f"random-rgb-{s}x{s}", _png(rng.integers(0, 256, (s, s, 3), dtype=np.uint8), d / f"tiny-rgb-{s}.png")))
    out.append(("tiny", "gradient-8x3", _png(np.tile(np.arange(8, dtype=np.uint8) * 30, (3, 1)), d / "tiny-strip.png")))
    for size in (28, 64, 224, 512):
        out.append(("noise", f"uniform-{size}", _png(rng.integers(0, 256, (size, size), dtype=np.uint8), d / f"noise-u-{size}.png")))
        out.append(("noise", f"gaussian-{size}", _png(128 + 40 * rng.standard_normal((size, size)), d / f"noise-g-{size}.png")))
        out.append(("noise", f"colour-{size}", _png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), d / f"noise-c-{size}.png")))
        sp = np.where(rng.random((size, size)) < 0.5, 0, 255).astype(np.uint8)
        out.append(("noise", f"salt-pepper-{size}", _png(sp, d / f"noise-sp-{size}.png")))
    import skimage.data as skd

    photos = ["astronaut", "camera", "cat", "coffee", "coins", "moon", "rocket", "clock", "stereo_motorcycle",
              "hubble_deep_field", "brick", "grass", "gravel", "horse", "chelsea"]
    for name in photos:
        img = getattr(skd, name)()
        if isinstance(img, tuple):
            img = img[0]
        out.append(("photo", f"skimage:{name}", _png(img, d / f"photo-{name}.png")))
    try:
        from sklearn.datasets import load_sample_images

        for fname, img in zip(load_sample_images().filenames, load_sample_images().images):
            out.append(("photo", f"sklearn:{Path(fname).stem}", _png(img, d / f"photo-sk-{Path(fname).stem}.png")))
    except ImportError:
        pass
    try:
        import matplotlib.cbook as cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            out.append(("photo", "matplotlib:grace_hopper", _png(np.asarray(Image.open(f).convert("RGB")), d / "photo-hopper.png")))
    except (ImportError, OSError, ValueError):
        pass
    for name in ("page", "text"):
        out.append(("text-page", f"skimage:{name}", _png(getattr(skd, name)(), d / f"text-{name}.png")))
    words = ("patient history findings impression the chest radiograph demonstrates no acute cardiopulmonary "
             "process heart size normal lungs clear report signed electronically").split()
    for i, (w, h, fs) in enumerate(((850, 1100, 14), (600, 800, 11), (1240, 1754, 20), (400, 300, 9))):
        page = Image.new("L", (w, h), 255)
        dr = ImageDraw.Draw(page)
        y = 20
        while y < h - 30:
            line = " ".join(rng.choice(words, size=12))
            dr.text((20, y), line, fill=0)
            y += fs + 6
        out.append(("text-page", f"rendered-{w}x{h}", _png(np.asarray(page), d / f"text-rendered-{i}.png")))
    return out


def heldout_set(work: Path) -> list[tuple[str, str, Path]]:
    """Public images the checks' thresholds were NOT set on, reported apart from the headline figures:
    (``refuse`` | ``accept``, name, file). Refuse: scikit-image's 200 LFW face crops (25×25 grey), its other
    photographs (colour wheel, right stereo view, motion-blurred clock, logo) and matplotlib's Minduka photo;
    accept: scikit-image's retina fundus, microaneurysm angiogram, immunohistochemistry slide and cell micrograph."""
    import matplotlib
    from PIL import Image
    import skimage
    import skimage.data as skd

    d = work / "heldout"
    d.mkdir(parents=True, exist_ok=True)
    out: list[tuple[str, str, Path]] = []
    faces = np.load(Path(skimage.__file__).parent / "data" / "lfw_subset.npy")
    for i, f in enumerate(faces):
        out.append(("refuse", f"skimage:lfw_subset:{i}", _png((np.asarray(f) * 255).round(), d / f"lfw-{i}.png")))
    for name in ("colorwheel", "logo"):
        out.append(("refuse", f"skimage:{name}", _png(np.asarray(getattr(skd, name)())[..., :3], d / f"{name}.png")))
    sk = Path(skimage.__file__).parent / "data"
    for fname in ("motorcycle_right.png", "clock_motion.png"):
        out.append(("refuse", f"skimage:{fname}", _png(np.asarray(Image.open(sk / fname).convert("RGB")), d / fname)))
    mp = Path(matplotlib.get_data_path()) / "sample_data" / "Minduka_Present_Blue_Pack.png"
    out.append(("refuse", "matplotlib:Minduka", _png(np.asarray(Image.open(mp).convert("RGB")), d / "minduka.png")))
    for name in ("retina", "microaneurysms", "immunohistochemistry", "cell"):
        out.append(("accept", f"skimage:{name}", _png(getattr(skd, name)(), d / f"med-{name}.png")))
    return out


def accept_set(work: Path, per_folder: int = 150, seed: int = 0) -> list[tuple[str, str, Path]]:
    """(folder, name, file) of real medical images in the shared data, at most ``per_folder`` per folder."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str, Path]] = []

    def pick(folder: str, files: list[Path]) -> None:
        files = sorted(files)
        if len(files) > per_folder:
            files = [files[i] for i in sorted(rng.choice(len(files), per_folder, replace=False))]
        out.extend((folder, str(f.relative_to(DATA)), f) for f in files)

    exts = {".png", ".jpg", ".jpeg"}
    pick("vqa-rad", [p for p in (DATA / "vqa-rad" / "images").glob("*") if p.suffix.lower() in exts])
    dic = [p for sub in ("J2KI", "JLSN", "RLE") for p in (DATA / "dicom" / sub).glob("*") if p.is_file()]
    pick("dicom-nema", dic)
    for name in ("ham10000-subset", "pocus-lus", "lc25000-lung", "brain-tumor-mri", "bccd"):
        pick(name, [p for p in (DATA / "images" / name).rglob("*") if p.suffix.lower() in exts])
    d = work / "accept"
    d.mkdir(parents=True, exist_ok=True)
    for name, npz in (("pneumoniamnist", DATA / "images" / "pneumoniamnist.npz"),
                      ("breastmnist", DATA / "images" / "breastmnist" / "breastmnist.npz")):
        if not npz.exists():
            continue
        with np.load(npz) as z:
            x = z["test_images"]
        for i in sorted(rng.choice(len(x), min(per_folder, len(x)), replace=False)):
            out.append((name, f"{name}:test:{i}", _png(x[i], d / f"{name}-{i}.png")))
    return out


def decide(path: Path) -> tuple[bool, str]:
    """(accepted, reason) through the default pipeline's check: decode, then ragmed.domains.ood.check_image."""
    from ragmed.domains.ood import check_image
    from ragmed.errors import DomainError, RagmedError
    from ragmed.io import load_image

    try:
        img = load_image(path)
    except RagmedError as e:
        return False, f"not decodable: {e.reason}"
    try:
        check_image(img)
    except DomainError as e:
        return True and False, e.reason
    return True, ""


def calibrate(per_folder: int, seed: int) -> dict:
    """The grey-photograph rules' thresholds, from medical images only: over a seeded sample of the shared medical
    images (``accept_set(per_folder, seed)``, grey ones: the rules apply to grey images only), the largest
    :func:`~ragmed.domains.ood.top_bright_smooth` (the rule refuses above it, rounded up to 0.01) and the largest
    :func:`~ragmed.domains.ood.face_neighbours` (the rule refuses from one more). No photograph is read."""
    import math

    from ragmed.domains.ood import face_neighbours, top_bright_smooth
    from ragmed.errors import RagmedError
    from ragmed.io import load_image

    t0 = time.perf_counter()
    tops, faces = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for folder, name, path in accept_set(Path(tmp), per_folder, seed):
            try:
                img = load_image(path)
            except RagmedError:
                continue
            if img.is_color or min(img.pixels.shape[:2]) < 9:
                continue
            tops.append((top_bright_smooth(img), name))
            faces.append((face_neighbours(img), name))
    tops.sort(reverse=True)
    faces.sort(reverse=True)
    return {"task": "safety_ood_calibration",
            "command": f"python eval/safety_ood.py --calibrate --per-folder {per_folder} --seed {seed}",
            "note": "thresholds of ragmed.domains.ood's grey-photograph rules, set on grey medical images only",
            "n_grey_medical": len(tops),
            "max_top_bright_smooth": round(tops[0][0], 4),
            "MAX_TOP_BRIGHT_SMOOTH": math.ceil(tops[0][0] * 100) / 100,
            "max_face_neighbours": faces[0][0], "MIN_FACE_NEIGHBOURS": faces[0][0] + 1,
            "highest_top_bright_smooth": [{"name": n, "value": round(v, 4)} for v, n in tops[:5]],
            "highest_face_neighbours": [{"name": n, "value": v} for v, n in faces[:5]],
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "eval" / "results" / "safety_ood.json"))
    ap.add_argument("--per-folder", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--before", action="store_true", help="the pre-issue default pipeline: no image check at all")
    ap.add_argument("--calibrate", action="store_true",
                    help="set the grey-photograph thresholds on medical images only (use e.g. --per-folder 600 "
                         "--seed 1) and write them to --out (default eval/results/safety_ood_calibration.json)")
    a = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"shared data not found at {DATA} (set RAGMED_DATA)")
    if a.calibrate:
        res = calibrate(a.per_folder, a.seed)
        out = Path(a.out) if a.out != ap.get_default("out") else REPO / "eval" / "results" / "safety_ood_calibration.json"
        out.write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        refuse, accept = refuse_set(work, a.seed), accept_set(work, a.per_folder, a.seed)
        rows = []
        for group, items in (("refuse", refuse), ("accept", accept)):
            for kind, name, path in items:
                if a.before:  # before issue 12 the default pipeline (no domains) decoded the image and answered
                    from ragmed.errors import RagmedError
                    from ragmed.io import load_image

                    try:
                        load_image(path)
                        ok, why = True, ""
                    except RagmedError as e:
                        ok, why = False, f"not decodable: {e.reason}"
                else:
                    ok, why = decide(path)
                rows.append({"set": group, "kind": kind, "name": name, "accepted": ok, "reason": why})
        held = []
        for group, name, path in heldout_set(work):
            ok, why = decide(path)
            held.append({"set": group, "name": name, "accepted": ok, "reason": why})
    ref = [r for r in rows if r["set"] == "refuse"]
    acc = [r for r in rows if r["set"] == "accept"]
    by_kind = {}
    for r in rows:
        k = f"{r['set']}:{r['kind']}"
        b = by_kind.setdefault(k, {"n": 0, "accepted": 0})
        b["n"] += 1
        b["accepted"] += int(r["accepted"])
    res = {
        "task": "safety_ood",
        "command": "python eval/safety_ood.py" + (" --before" if a.before else "") +
                   f" --per-folder {a.per_folder} --seed {a.seed}",
        "check": "none (pre-issue default pipeline)" if a.before else "ragmed.domains.ood.check_image",
        "refused_share_of_ood": round(sum(not r["accepted"] for r in ref) / len(ref), 4),
        "accepted_share_of_medical": round(sum(r["accepted"] for r in acc) / len(acc), 4),
        "n_ood": len(ref), "n_medical": len(acc),
        "by_kind": by_kind,
        "ood_accepted": [r["name"] for r in ref if r["accepted"]],
        "medical_refused": [{"name": r["name"], "reason": r["reason"]} for r in acc if not r["accepted"]],
        "heldout": {"note": "public images the thresholds were not set on (see heldout_set)",
                    "refused_share": round(sum(not r["accepted"] for r in held if r["set"] == "refuse")
                                           / max(1, sum(r["set"] == "refuse" for r in held)), 4),
                    "accepted_share": round(sum(r["accepted"] for r in held if r["set"] == "accept")
                                            / max(1, sum(r["set"] == "accept" for r in held)), 4),
                    "n_refuse": sum(r["set"] == "refuse" for r in held),
                    "n_accept": sum(r["set"] == "accept" for r in held),
                    "wrong": [{"name": r["name"], "set": r["set"], "reason": r["reason"]} for r in held
                              if r["accepted"] != (r["set"] == "accept")][:60]},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps({k: res[k] for k in ("refused_share_of_ood", "accepted_share_of_medical", "n_ood", "n_medical",
                                          "ood_accepted")}, indent=1))
    print(f"medical refused: {len(res['medical_refused'])}", res["medical_refused"][:10])
    h = res["heldout"]
    print(f"held out: refused {h['refused_share']} of {h['n_refuse']}, accepted {h['accepted_share']} of {h['n_accept']}")


if __name__ == "__main__":
    main()
