"""Throughput of the image encoders: decode+preprocess, encode, and both overlapped, in images/second; peak memory.

Sets (from ../shared/data): the 315 VQA-RAD JPEGs; the CT and MR DICOM samples (NEMA WG04 CT1/CT2/MR1-4 in JPEG 2000,
JPEG-LS and RLE, plus pydicom's CT_small / MR_small; repeated to 80 images); the large JPEG 2000 chest radiograph
RG1_J2KI (1955×1841 CR, repeated 12 times).
- ``decode_preprocess``: load_image (decode, modality/VOI LUT, normalise) + the encoder's preprocessing, on a thread
  pool of ``--workers`` threads, no encoder running;
- ``encode``: the network alone on already-preprocessed arrays (batched, inference_mode);
- ``end_to_end``: ``RagmedImageEncoder.encode_paths`` (decode+preprocess of the next batch overlapped with encoding).
Peak memory is the process's maximum resident set (ru_maxrss) after each set.

    python eval/bench_encode.py [--encoder ragmed-default] [--threads 2] [--out eval/results/bench_encode.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RAGMED_DATA", REPO.parent / "shared" / "data"))


def sets() -> dict[str, list[Path]]:
    vqa = sorted((DATA / "vqa-rad" / "images").glob("*.jpg"))
    dcm = [DATA / "dicom" / c / f"{m}_{c}" for c in ("J2KI", "JLSN", "RLE") for m in ("CT1", "CT2", "MR1", "MR2", "MR3", "MR4")]
    dcm += [DATA / "dicom" / "pydicom-test-files" / n for n in ("CT_small.dcm", "MR_small.dcm")]
    dcm = [p for p in dcm if p.exists()]
    dcm = (dcm * (80 // max(1, len(dcm)) + 1))[:80]
    rg1 = [DATA / "dicom" / "J2KI" / "RG1_J2KI"] * 12
    return {"vqa-rad-jpeg": vqa, "ct-mr-dicom": dcm, "rg1-j2k-chest-1955x1841": rg1}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="ragmed-default")
    ap.add_argument("--path", default=None, help="model directory (default: the shipped weights)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable CPUs)")
    ap.add_argument("--workers", type=int, default=2, help="decode/preprocess threads")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default=str(REPO / "eval" / "results" / "bench_encode.json"))
    a = ap.parse_args(argv)

    from ragmed.encoders import create_encoder
    from ragmed.encoders.text import set_torch_threads
    from ragmed.io import load_image

    import torch

    set_torch_threads(a.threads)
    kw = {"batch_size": a.batch_size, "threads": a.threads, "preprocess_workers": a.workers}
    if a.path:
        kw["path"] = a.path
    enc = create_encoder(a.encoder, **kw)
    enc.warm_up()
    enc.encode_arrays(np.zeros((2, enc.preprocess_config.size, enc.preprocess_config.size, 3), np.uint8))
    base_mb = peak_mb()
    results = {}
    for name, paths in sets().items():
        if not paths:
            results[name] = {"skipped": "data not found"}
            continue

        def prep(p):
            return enc.preprocess(load_image(p))

        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=a.workers) as pool:
            arrs = np.stack(list(pool.map(prep, paths)))
        t_prep = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(0, len(arrs), a.batch_size):
            enc.encode_arrays(arrs[i:i + a.batch_size])
        t_enc = time.perf_counter() - t
        t = time.perf_counter()
        v = enc.encode_paths(paths)
        t_e2e = time.perf_counter() - t
        assert v.shape == (len(paths), enc.dim)
        sample = load_image(paths[0])
        results[name] = {
            "n_images": len(paths), "example_shape": list(sample.shape), "example_format": sample.format,
            "decode_preprocess_images_per_s": round(len(paths) / t_prep, 1),
            "encode_images_per_s": round(len(paths) / t_enc, 1),
            "end_to_end_images_per_s": round(len(paths) / t_e2e, 1),
            "peak_rss_mb": round(peak_mb(), 1),
        }
        print(name, json.dumps(results[name]), file=sys.stderr)
    out = {
        "encoder": {"name": a.encoder, "id": enc.id, "dim": enc.dim, "input_px": enc.preprocess_config.size,
                    "params_m": round(sum(p.numel() for p in enc.model.parameters()) / 1e6, 2),
                    "weights_mb": round((enc.path / "model.safetensors").stat().st_size / 2**20, 2)},
        "results": results,
        "rss_after_model_load_mb": round(base_mb, 1),
        "settings": {"torch_threads": torch.get_num_threads(), "decode_workers": a.workers, "batch_size": a.batch_size},
        "machine": {"cpus_usable": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                    "torch": torch.__version__, "note": "2 shared cores; other jobs ran at the same time"},
        "target": "decode+encode >= 50 images/s with the default image encoder on 2 cores (end_to_end)",
        "command": "python eval/bench_encode.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
