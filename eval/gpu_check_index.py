"""GPU check for issue H (item 5): GPU encoding with ragmed's shipped image tower, and FAISS GPU search when present.

One script for a bare GPU machine that has torch (CUDA), numpy, safetensors and pillow but neither faiss nor
ragmed's optional dependencies (every ragmed import here is of a module that needs only those):

    PYTHONPATH=. python eval/gpu_check_index.py --out $OUT/gpu_check_index.json
    PYTHONPATH=. python eval/gpu_check_index.py --device cpu --images 64 --out /tmp/x.json     # CPU-only smoke

1. Encoding: ``RagmedImageEncoder`` (the shipped ``ragmed/encoders/weights/ragmed-default``) with ``device="cpu"``
   and ``device="cuda"``, through its own ``encode_arrays`` (uint8 (n, 112, 112, 3) Y'CbCr arrays → normalised on the
   host → the network on the device → numpy): images/s per batch size, plus the network alone with the batch already
   on the GPU (fp32, and fp16 autocast), and the agreement of GPU and CPU embeddings (cosine of the same images).
   Pixels are random (seeded): the network's cost does not depend on them, and no data set is needed. Also records
   what ``device="auto"`` (the default) resolves to.
2. FAISS, only if ``import faiss`` works and ``faiss.get_num_gpus() > 0``: for each factory, the CPU index built by
   ``ragmed.index.faiss_utils.build_faiss`` over N random unit vectors and its copy from ``to_gpu_if_available`` (the
   function the index store uses): the GPU index type, top-10 id agreement with the CPU index, and queries/s.
   Otherwise the section says why it was skipped.

Prints one JSON object and writes it to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _sync(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def encoding(args) -> dict:
    import torch

    from ragmed.encoders.default import RagmedImageEncoder
    from ragmed.encoders.tower import to_tensor_batch

    cuda = torch.cuda.is_available()
    devices = ["cpu"] + (["cuda"] if cuda and args.device != "cpu" else [])
    if args.device == "cuda" and not cuda:
        return {"error": "--device cuda but torch sees no CUDA device"}
    auto = RagmedImageEncoder(device="auto")
    auto.warm_up()
    out: dict = {"torch": torch.__version__, "cuda_available": cuda, "torch_cuda": torch.version.cuda,
                 "gpu": torch.cuda.get_device_name(0) if cuda else None, "cpu_threads": torch.get_num_threads(),
                 "auto_device_resolves_to": str(auto.device), "encoder_id": auto.id, "dim": auto.dim, "devices": {}}
    del auto
    rng = np.random.default_rng(0)
    size = RagmedImageEncoder(device="cpu").preprocess_config.size
    # the same images on every device for the agreement (each device's timing set is drawn after them)
    same = rng.integers(0, 256, size=(args.agree, size, size, 3), dtype=np.uint8)
    emb = {}
    for dev in devices:
        enc = RagmedImageEncoder(device=dev, threads=args.cpu_threads or None)
        enc.warm_up()
        n = args.images if dev == "cuda" else args.cpu_images
        arrs = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        emb[dev] = enc.encode_arrays(same)  # also warms up (cuDNN autotune, allocator)
        rows = {}
        for bs in [int(b) for b in args.batches.split(",")]:
            enc.encode_arrays(arrs[:bs])
            t = time.perf_counter()
            for i in range(0, n, bs):
                enc.encode_arrays(arrs[i:i + bs])
            s = time.perf_counter() - t
            rows[bs] = {"images": n, "seconds": round(s, 4), "images_per_s": round(n / s, 1)}
        res = {"encode_arrays": rows, "torch_threads": torch.get_num_threads()}
        if dev == "cuda":  # the network alone, the batch already on the GPU
            model = enc.model
            net = {}
            for bs in [int(b) for b in args.batches.split(",")]:
                x = to_tensor_batch(arrs[:bs], enc.preprocess_config).to(dev)
                for amp in (False, True):
                    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                        ref = model(x).float()
                        _sync(torch, dev)
                        reps = max(3, args.images // bs)
                        t = time.perf_counter()
                        for _ in range(reps):
                            y = model(x)
                        _sync(torch, dev)
                        s = time.perf_counter() - t
                    key = f"batch {bs}" + (" fp16 autocast" if amp else " fp32")
                    net[key] = {"images_per_s": round(reps * bs / s, 1)}
                    if amp:
                        a = torch.nn.functional.normalize(ref, dim=1)
                        b = torch.nn.functional.normalize(y.float(), dim=1)
                        net[key]["min_cosine_vs_fp32"] = round(float((a * b).sum(1).min()), 6)
            res["network_only"] = net
            res["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["devices"][dev] = res
        del enc
    if "cuda" in emb:
        a, b = emb["cpu"], emb["cuda"]
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        cos = (a * b).sum(1)
        out["gpu_vs_cpu_embeddings"] = {"images": len(a), "min_cosine": round(float(cos.min()), 6),
                                        "mean_cosine": round(float(cos.mean()), 6), "cudnn_tf32": False}
        # the same with cuDNN's TF32 convolutions on (torch's default, the encoder's allow_tf32=True)
        t32 = RagmedImageEncoder(device="cuda", allow_tf32=True).encode_arrays(same)
        t32 = t32 / np.linalg.norm(t32, axis=1, keepdims=True)
        cos32 = (a * t32).sum(1)
        out["gpu_tf32_vs_cpu_embeddings"] = {"images": len(a), "min_cosine": round(float(cos32.min()), 6),
                                             "mean_cosine": round(float(cos32.mean()), 6), "cudnn_tf32": True}
        best = lambda d: max(r["images_per_s"] for r in out["devices"][d]["encode_arrays"].values())  # noqa: E731
        out["speedup_gpu_over_cpu_encode_arrays"] = round(best("cuda") / best("cpu"), 2)
    out["input"] = f"random uint8 ({size}, {size}, 3) arrays, seeded; the network's cost does not depend on pixels"
    return out


def faiss_check(args) -> dict:
    try:
        import faiss
    except ImportError as e:
        return {"skipped": f"faiss is not importable here ({e})"}
    ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    info = {"faiss": getattr(faiss, "__version__", "?"), "num_gpus": ngpu}
    if ngpu == 0 or args.device == "cpu":
        return {**info, "skipped": "faiss sees no GPU (a CPU-only faiss build, or no device)" if ngpu == 0
                else "--device cpu"}
    from ragmed.index.faiss_utils import build_faiss, set_search_params, to_gpu_if_available

    rng = np.random.default_rng(1)
    xb = rng.standard_normal((args.faiss_n, 384), dtype=np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = xb[rng.choice(args.faiss_n, args.faiss_queries, replace=False)] + 0.05 * rng.standard_normal(
        (args.faiss_queries, 384), dtype=np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    ids = np.arange(args.faiss_n, dtype=np.int64) + 10_000_000  # explicit ids, as the store uses them
    rows = {}
    for factory in [f for f in args.factories.split(";") if f]:
        t = time.perf_counter()
        cpu = build_faiss(xb, ids, factory, seed=0)
        build_s = time.perf_counter() - t
        set_search_params(cpu, nprobe=args.nprobe)
        gpu = to_gpu_if_available(cpu)
        inner = faiss.downcast_index(gpu.index) if hasattr(gpu, "index") else faiss.downcast_index(gpu)
        row = {"cpu_build_s": round(build_s, 2), "gpu_index_type": type(inner).__name__}
        if "Gpu" not in type(inner).__name__:
            rows[factory] = {**row, "skipped": "to_gpu_if_available kept it on the CPU (no GPU version)"}
            continue
        if "IVF" in factory:  # the same nprobe on both sides (the GPU clone may not carry it over)
            if hasattr(inner, "nprobe"):
                inner.nprobe = args.nprobe
            elif hasattr(inner, "setNumProbes"):
                inner.setNumProbes(args.nprobe)
            row["gpu_nprobe"] = int(getattr(inner, "nprobe", -1))
        res = {}
        for name, index in (("cpu", cpu), ("gpu", gpu)):
            index.search(xq[:10], 10)
            t = time.perf_counter()
            _, I = index.search(xq, 10)
            s = time.perf_counter() - t
            res[name] = (I, s)
        same = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res["cpu"][0], res["gpu"][0])]))
        row.update({"queries": len(xq), "top10_overlap_gpu_vs_cpu": round(same, 5),
                    "identical_top10_rows": int(sum((a == b).all() for a, b in zip(res["cpu"][0], res["gpu"][0]))),
                    "cpu_queries_per_s": round(len(xq) / res["cpu"][1], 1),
                    "gpu_queries_per_s": round(len(xq) / res["gpu"][1], 1),
                    "speedup": round(res["cpu"][1] / res["gpu"][1], 2)})
        rows[factory] = row
        print(factory, row, file=sys.stderr, flush=True)
    return {**info, "n": args.faiss_n, "nprobe": args.nprobe, "cpu_threads": faiss.omp_get_max_threads(),
            "factories": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto: measure the GPU when torch sees one; cpu: CPU only (a smoke test)")
    ap.add_argument("--images", type=int, default=4096, help="images per GPU timing")
    ap.add_argument("--cpu-images", type=int, default=256, help="images per CPU timing")
    ap.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--agree", type=int, default=64, help="images compared GPU vs CPU")
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--faiss-n", type=int, default=1_000_000)
    ap.add_argument("--faiss-queries", type=int, default=2000)
    ap.add_argument("--factories", default="Flat;IVF1024,Flat;IVF1024,PQ48", help="';'-separated factory strings")
    ap.add_argument("--nprobe", type=int, default=32)
    args = ap.parse_args()
    t = time.perf_counter()
    out = {"command": "python eval/gpu_check_index.py " + " ".join(sys.argv[1:]).replace(str(Path(args.out).parent),
                                                                                         "OUT"),
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}}
    try:
        out["encoding"] = encoding(args)
    except Exception as e:  # noqa: BLE001 - the JSON must say what failed
        out["encoding"] = {"error": f"{type(e).__name__}: {e}"[:500]}
    try:
        out["faiss"] = faiss_check(args)
    except Exception as e:  # noqa: BLE001
        out["faiss"] = {"error": f"{type(e).__name__}: {e}"[:500]}
    out["seconds"] = round(time.perf_counter() - t, 1)
    text = json.dumps(out, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    sys.exit(1 if "error" in out["encoding"] else 0)


if __name__ == "__main__":
    main()
