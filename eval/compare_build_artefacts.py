"""Build the same 4-domain corpus (20 real images per domain from $RAGMED_DATA) with the ragmed source tree given
and dump what the build derives: evidence floors, per-domain channel calibration, the router classifier, the file
list, and a digest of every stored image / text vector.

    git archive <commit> | tar -x -C /tmp/old
    python eval/compare_build_artefacts.py /tmp/old /tmp/out-old && python eval/compare_build_artefacts.py . /tmp/out-new
    python eval/compare_build_artefacts.py CODE OUT --fit      # the same with the image tower fitted at build time
    python eval/compare_build_artefacts.py --compare OUT_OLD OUT_NEW --out build_equivalence_NAME

``--fit``: the bundled ``ragmed-default`` image tower and ``index.fit_image_encoder: true`` with a short fit (1 epoch, 5 steps) on a seeded sample of 50 of the 80
images, so the fitted tower, its id and every vector it encodes can be compared between two trees.
Used for issue 11: merging the two calibrations, fitting the router from the build's own vectors, and fitting the
tower from the build's own decoded images (one decode) left every artefact as it was
(eval/results/build_equivalence_issue11*.json)."""
import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("code", nargs="?")
ap.add_argument("out", nargs="?")
ap.add_argument("--fit", action="store_true")
ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"))
ap.add_argument("--result", default=None, help="with --compare: eval/results/<name>.json")
a = ap.parse_args()

if a.compare:
    old, new = (json.loads((Path(d) / "dump.json").read_text()) for d in a.compare)
    keys = ["floors", "domains", "router", "coef_sum", "files", "encoders", "vectors"]
    res = {k + "_equal": old.get(k) == new.get(k) for k in keys}
    res["image_encoder_id"] = [old["encoders"].get("image", {}).get("id"), new["encoders"].get("image", {}).get("id")]
    res["timings_new"] = new.get("timings")
    print(json.dumps(res, indent=1))
    if a.result:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from ragmed.eval.bench import write_result

        write_result(a.result, {"fit": bool(new.get("fit")), **res,
                                "note": "OLD: the tree before the change (git archive), NEW: this tree; same corpus"})
    sys.exit(0 if all(res[k + "_equal"] for k in keys) else 1)

code, out = Path(a.code).resolve(), Path(a.out)
sys.path.insert(0, str(code))
import ragmed  # noqa: E402

assert str(ragmed.__file__).startswith(str(code)), ragmed.__file__
import numpy as np  # noqa: E402
from tests.multidomain_utils import write_corpus, multidomain_config  # noqa: E402
from tests.conftest import data_path  # noqa: E402
from ragmed.corpus import read_corpus  # noqa: E402
from ragmed.pipeline.build import build_from_config  # noqa: E402

shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
manifest = write_corpus(data_path(), out, 20)
cfg = multidomain_config()
if a.fit:  # the multi-domain pipeline's classic descriptor cannot be fitted: the bundled tower instead
    from ragmed.config import EncoderSpec

    cfg.encoders.image = EncoderSpec(name="ragmed-default")
    for k, v in {"fit_image_encoder": True, "fit_epochs": 1, "fit_min_steps": 5, "fit_max_steps": 5,
                 "fit_max_images": 50}.items():
        setattr(cfg.index, k, v)
rep = build_from_config(read_corpus(manifest), out / "index", cfg, progress=False)
vd = (out / "index" / "current").resolve()
m = json.loads((vd / "manifest.json").read_text())
cal = json.loads((vd / "retrieval_calibration.json").read_text())
floors = m.get("calibration") or cal.get("floors")
router = json.loads((vd / "router.json").read_text())
z = dict(np.load(vd / "router.npz"))
vectors = {}
for d in sorted(p for p in (vd / "vectors").iterdir() if p.is_dir()):
    for kind in ("image", "text"):
        ids, vecs = [], []
        for p in sorted(d.glob(f"{kind}-*.npz")):
            with np.load(p) as zz:
                ids.append(zz["ids"])
                vecs.append(zz["vectors"])
        if ids:
            h = hashlib.sha256(np.concatenate(ids).tobytes() + np.concatenate(vecs).tobytes()).hexdigest()[:16]
            vectors[f"{d.name}/{kind}"] = h
enc = {k: {kk: vv for kk, vv in v.items()} for k, v in m["encoders"].items()}
json.dump({"floors": floors, "domains": cal["domains"], "router": router, "coef_sum": float(z["coef"].sum()),
           "post": rep.post_build, "files": sorted(p.name for p in vd.iterdir()), "encoders": enc,
           "vectors": vectors, "fit": a.fit, "timings": rep.timings},
          open(out / "dump.json", "w"), indent=1, default=str)
print("done", out)
