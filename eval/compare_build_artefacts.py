"""Build the same 4-domain corpus (20 real images per domain from $RAGMED_DATA) with the ragmed source tree given
and dump what the build derives: evidence floors, per-domain channel calibration, the router classifier, the file list.

    git archive <commit> | tar -x -C /tmp/old
    python eval/compare_build_artefacts.py /tmp/old /tmp/out-old && python eval/compare_build_artefacts.py . /tmp/out-new

Used for issue 11 to show that merging the two calibrations and fitting the router from the build's own vectors left
every artefact as it was (eval/results/build_equivalence_issue11.json)."""
import json, sys, shutil
from pathlib import Path
code, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
sys.path.insert(0, str(code))
import ragmed; assert str(ragmed.__file__).startswith(str(code)), ragmed.__file__
from tests.multidomain_utils import write_corpus, multidomain_config
from tests.conftest import data_path
from ragmed.corpus import read_corpus
from ragmed.pipeline.build import build_from_config
shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
manifest = write_corpus(data_path(), out, 20)
rep = build_from_config(read_corpus(manifest), out / "index", multidomain_config(), progress=False)
vd = (out / "index" / "current").resolve()
m = json.loads((vd / "manifest.json").read_text())
cal = json.loads((vd / "retrieval_calibration.json").read_text())
floors = m.get("calibration") or cal.get("floors")
router = json.loads((vd / "router.json").read_text())
import numpy as np
z = dict(np.load(vd / "router.npz"))
json.dump({"floors": floors, "domains": cal["domains"], "router": router, "coef_sum": float(z["coef"].sum()),
           "post": rep.post_build, "files": sorted(p.name for p in vd.iterdir())}, open(out / "dump.json", "w"), indent=1, default=str)
print("done", out)
