"""GPU paths (issue H, item 5): FAISS GPU indexes when faiss sees a GPU, GPU encoding when torch sees CUDA.

The GPU tests skip on machines without one (saying so); the CPU-side tests check what the same code does there:
the index stays a CPU index, ``device="auto"`` resolves to the CPU, and ``eval/gpu_check_index.py`` runs without faiss.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")
torch = pytest.importorskip("torch")

from ragmed.index.faiss_utils import build_faiss, set_search_params, to_gpu_if_available  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FAISS_GPUS = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
needs_faiss_gpu = pytest.mark.skipif(FAISS_GPUS == 0, reason="faiss sees no GPU (CPU-only faiss build or no device)")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")


def _data(n=4000, d=64, nq=50, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:nq] + 0.1 * rng.standard_normal((nq, d), dtype=np.float32)
    return x, np.arange(n, dtype=np.int64) * 7 + 3, q / np.linalg.norm(q, axis=1, keepdims=True)


@pytest.mark.skipif(FAISS_GPUS > 0, reason="this machine has a GPU: test_faiss_gpu_search_equals_cpu runs instead")
def test_without_gpu_the_index_stays_on_the_cpu():
    x, ids, q = _data()
    cpu = build_faiss(x, ids, "Flat")
    assert to_gpu_if_available(cpu) is cpu
    _, I = cpu.search(q, 5)
    assert set(I[:, 0]) <= set(ids)


@needs_faiss_gpu
@pytest.mark.parametrize("factory", ["Flat", "IVF64,Flat"])
def test_faiss_gpu_search_equals_cpu(factory):
    x, ids, q = _data()
    cpu = build_faiss(x, ids, factory)
    set_search_params(cpu, nprobe=64)  # every list: exact, so CPU and GPU must agree
    gpu = to_gpu_if_available(cpu)
    inner = faiss.downcast_index(gpu.index) if hasattr(gpu, "index") else faiss.downcast_index(gpu)
    assert "Gpu" in type(inner).__name__
    if hasattr(inner, "nprobe"):
        inner.nprobe = 64
    Dc, Ic = cpu.search(q, 10)
    Dg, Ig = gpu.search(q, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(Ic, Ig)]) >= 0.99
    assert np.allclose(Dc, Dg, atol=1e-4)


def test_image_encoder_auto_device():
    from ragmed.encoders.default import RagmedImageEncoder

    enc = RagmedImageEncoder()
    assert enc.device == "auto"
    enc.warm_up()
    assert enc.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert next(enc.model.parameters()).device.type == enc.device


@needs_cuda
def test_image_encoder_gpu_matches_cpu():
    from ragmed.encoders.default import RagmedImageEncoder

    cpu, gpu = RagmedImageEncoder(device="cpu"), RagmedImageEncoder(device="cuda")
    arrs = np.random.default_rng(0).integers(0, 256, (8, cpu.preprocess_config.size, cpu.preprocess_config.size, 3),
                                             dtype=np.uint8)
    a, b = cpu.encode_arrays(arrs), gpu.encode_arrays(arrs)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    assert (a * b).sum(1).min() > 0.999


def test_gpu_check_script_runs_without_faiss(tmp_path):
    """The GPU check must run on a machine without faiss: here faiss is made unimportable and the CPU is measured."""
    block = tmp_path / "nofaiss"
    block.mkdir()
    (block / "faiss.py").write_text('raise ImportError("faiss blocked by the test")\n')
    out = tmp_path / "x.json"
    env = {**os.environ, "PYTHONPATH": f"{block}{os.pathsep}{REPO}"}
    r = subprocess.run([sys.executable, str(REPO / "eval" / "gpu_check_index.py"), "--device", "cpu", "--cpu-images",
                        "8", "--agree", "4", "--batches", "4", "--cpu-threads", "1", "--out", str(out)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["encoding"]["auto_device_resolves_to"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert res["encoding"]["devices"]["cpu"]["encode_arrays"]["4"]["images_per_s"] > 0
    assert "faiss is not importable" in res["faiss"]["skipped"]
    assert "/work" not in res["command"] and str(tmp_path) not in res["command"]
