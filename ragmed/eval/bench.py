"""Small helpers shared by the speed benchmarks in ``eval/bench_*.py``: result files that record the command line and
machine, plain-text tables, percentiles and peak memory."""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from ragmed.settings import settings

RESULTS_DIR = Path(__file__).resolve().parent.parent.parent / "eval" / "results"
CACHE_DIR = settings().bench_cache or Path(__file__).resolve().parent.parent.parent / "eval" / ".cache"


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpus": os.cpu_count()}
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    for mod in ("faiss", "numpy", "torch", "llama_index.core"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            info[mod.split(".")[0] if mod != "llama_index.core" else "llama_index_core"] = getattr(m, "__version__", "?")
        except Exception:
            pass
    return info


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def write_result(name: str, payload: dict[str, Any], results_dir: Path | None = None) -> Path:
    """Write ``eval/results/NAME.json`` atomically with the command line, the time and the machine."""
    d = Path(results_dir or RESULTS_DIR)
    d.mkdir(parents=True, exist_ok=True)
    out = {"command": command_line(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": machine(), **payload}
    p = d / f"{name}.json"
    tmp = d / f"{name}.json.tmp"
    tmp.write_text(json.dumps(out, indent=2, default=float) + "\n")
    os.replace(tmp, p)
    return p


def table(rows: list[dict[str, Any]], columns: list[str] | None = None, floatfmt: str = "{:.4g}") -> str:
    """A plain-text table (no dependency), one row per dict."""
    if not rows:
        return "(no rows)"
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return floatfmt.format(v)
        return str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join([line, sep, *body])


def _numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def percentiles(samples_s: list[float]) -> dict[str, float]:
    import numpy as np

    a = np.asarray(samples_s, dtype=np.float64) * 1000.0
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "mean_ms": float(a.mean()), "n": int(a.size)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss) in MiB."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2**20
