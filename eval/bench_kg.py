"""Knowledge-graph benchmark: build and load times, sizes, linking latency.

    python eval/bench_kg.py [--out eval/results/kg.json] [--loads 5] [--skip-build]

Measures, for the open default graph (ICD-10-CM + HPO with disease links + MeSH, from registry packages) and for
the Disease Ontology OBO sample (and DOID + SYMP + open combined):
- build time (sources → networkx, xrefs resolved) and save time, node / edge / linkable / with-CUI counts, bytes;
- load time of ``load_graph`` in fresh processes (median of ``--loads``; wall time and the process's CPU time, which
  a shared, oversubscribed machine inflates less), also with the interpreter start and imports ("process" time),
  and the time to build the networkx view;
- linking latency: one question + 5 IU X-ray reports linked after load (median over 100 such sets), and
  ``knowledge_evidence`` on the same input; one 5-sentence IU report linked warm (median / p95 over 200 links).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RAGMED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO / "eval"))

LOAD_SNIPPET = """
import time, json
t0 = time.perf_counter()
from ragmed.knowledge import load_graph
t1 = time.perf_counter()
c1 = time.process_time()
kg = load_graph({path!r}, cache=False)
t2 = time.perf_counter()
c2 = time.process_time()
kg.link("No pneumothorax.")
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "load_s": t2 - t1, "load_cpu_s": c2 - c1, "first_link_s": t3 - t2}}))
"""


def measure_load(path: Path, n: int) -> dict:
    loads, procs, imports, cpus = [], [], [], []
    for _ in range(n):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET.format(path=str(path))], capture_output=True,
                             text=True, check=True).stdout
        procs.append(time.perf_counter() - t)
        d = json.loads(out.strip().splitlines()[-1])
        loads.append(d["load_s"])
        imports.append(d["import_s"])
        cpus.append(d["load_cpu_s"])
    return {"load_s_median": round(statistics.median(loads), 4), "load_s_all": [round(x, 4) for x in loads],
            "load_cpu_s_median": round(statistics.median(cpus), 4),  # CPU time: less sensitive to a loaded machine
            "import_s_median": round(statistics.median(imports), 4),
            "process_s_median": round(statistics.median(procs), 4)}


def sizes(path: Path) -> dict:
    m = json.loads((path / "manifest.json").read_text())
    c = m["counts"]
    return {"id": m["id"], "nodes": c["nodes"], "edges": c["edges"], "linkable": c["linkable"],
            "with_cui": c["with_cui"], "lexicon_entries": c["lexicon_entries"], "by_source": c["by_source"],
            "by_relation": c["by_relation"],
            "bytes": sum(p.stat().st_size for p in path.iterdir() if p.is_file())}


def build(specs: list[str], out: Path) -> dict:
    from ragmed.knowledge import build_graph, save_graph

    t = time.perf_counter()
    G = build_graph(specs)
    t1 = time.perf_counter()
    save_graph(G, out)
    t2 = time.perf_counter()
    return {"specs": [s.replace(str(DATA), "$RAGMED_DATA") for s in specs], "build_s": round(t1 - t, 3),
            "save_s": round(t2 - t1, 3)}


def link_latency(path: Path, reps: int = 100) -> dict:
    from link_iu import load_iu

    from ragmed.knowledge import knowledge_evidence, load_graph

    kg = load_graph(path)
    reports = [r["text"] for r in load_iu(500)]
    questions = ["Is there a pleural effusion?", "Is the heart enlarged?", "Any sign of pneumonia or pneumothorax?",
                 "Is there evidence of COPD or emphysema?"]
    link_t, ev_t, n_concepts = [], [], []
    for i in range(reps):
        q = questions[i % len(questions)]
        batch = reports[(5 * i) % 495:(5 * i) % 495 + 5]
        t = time.perf_counter()
        ms = kg.link(q)
        for r in batch:
            ms += kg.link(r)
        link_t.append(time.perf_counter() - t)
        n_concepts.append(len(ms))
        t = time.perf_counter()
        knowledge_evidence(kg, q, batch, max_concepts=5)
        ev_t.append(time.perf_counter() - t)
    five = [r for r in reports if len([x for x in re.split(r"(?<=[.!?])\s+", r.strip()) if x]) == 5]
    five_t = []
    for i in range(max(reps, 200)):
        r = five[i % len(five)]
        t = time.perf_counter()
        kg.link(r)
        five_t.append((time.perf_counter() - t) * 1000)
    five_t.sort()
    ms_ = sorted(x * 1000 for x in link_t)
    ev_ = sorted(x * 1000 for x in ev_t)
    return {"question_plus_5_reports_link_ms_median": round(statistics.median(ms_), 3),
            "question_plus_5_reports_link_ms_p95": round(ms_[int(0.95 * len(ms_)) - 1], 3),
            "knowledge_evidence_ms_median": round(statistics.median(ev_), 3),
            "knowledge_evidence_ms_p95": round(ev_[int(0.95 * len(ev_)) - 1], 3),
            "mentions_per_set_mean": round(statistics.mean(n_concepts), 2), "sets": reps,
            "five_sentence_report_link_ms_median": round(statistics.median(five_t), 3),
            "five_sentence_report_link_ms_p95": round(five_t[int(0.95 * len(five_t)) - 1], 3),
            "five_sentence_reports": len(five)}


def networkx_view(path: Path) -> float:
    from ragmed.knowledge import load_graph

    kg = load_graph(path, cache=False)
    t = time.perf_counter()
    _ = kg.graph
    return round(time.perf_counter() - t, 3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "eval" / "results" / "kg.json"))
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--skip-build", action="store_true", help="measure the committed knowledge/open-default only")
    ap.add_argument("--kg", action="append", default=[], metavar="NAME=DIR",
                    help="also measure this prebuilt graph (e.g. an earlier version, for a before/after)")
    args = ap.parse_args(argv)
    shown = [a.split("=", 1)[0] + "=DIR" if a in args.kg else a for a in (argv or sys.argv[1:])]  # no local paths
    res: dict = {"command": "python " + " ".join([os.path.relpath(__file__, REPO), *shown]),
                 "machine": f"{os.cpu_count()} CPUs (shared), python {sys.version.split()[0]}",
                 "load_avg_at_start": os.getloadavg(), "graphs": {}}
    default = REPO / "knowledge" / "open-default"
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {"open-default (committed)": (None, default)}
        for spec in args.kg:
            label, _, d = spec.partition("=")
            graphs[label] = (None, Path(d))
        if not args.skip_build:
            doid = DATA / "ontology" / "doid" / "doid_2016-09-01.obo"
            symp = DATA / "ontology" / "symp" / "symp.obo"
            graphs["open-default (rebuilt)"] = (["open"], Path(tmp) / "open-default")
            if doid.exists():
                graphs["doid-obo"] = ([f"obo:{doid}"], Path(tmp) / "doid")
                graphs["open+doid+symp"] = (["open", f"obo:{doid}", f"obo:{symp}"], Path(tmp) / "open-doid-symp")
        for name, (specs, path) in graphs.items():
            entry: dict = {}
            if specs:
                entry.update(build(specs, path))
                print(name, "built", entry, flush=True)
            entry.update(sizes(path))
            entry.update(measure_load(path, args.loads))
            entry["networkx_view_s"] = networkx_view(path)
            if (DATA / "reports" / "iu-xray").exists():
                entry.update(link_latency(path))
            res["graphs"][name] = entry
            print(name, json.dumps({k: v for k, v in entry.items() if k not in ("by_source", "by_relation")}),
                  flush=True)
    res["load_avg_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
