"""Fuzz ``ragmed.io.load_image`` with mutated DICOM files.

Seeds are real DICOM files (``$RAGMED_DATA/dicom`` when present, else pydicom's bundled test files): native and
compressed (JPEG baseline / extended / lossless, JPEG-LS, JPEG 2000, RLE, deflate), single- and multi-frame, colour,
and a few objects without pixel data. Each mutated file gets 1-3 mutations: bit flips (anywhere / inside the pixel
data, where the codec headers are), random byte runs, truncation, inserted / deleted / spliced chunks, corrupted tags,
corrupted lengths (0, odd, huge, undefined), random VRs, huge or zero Rows / Columns / NumberOfFrames / Samples per
Pixel / Bits Allocated, a swapped transfer syntax UID, and lies inside the compressed stream itself (JPEG 2000 SIZ
image / tile size and component count, JPEG and JPEG-LS SOF lines / samples per line / precision, RLE segment
count and offsets) that only the decoder sees.

Every file is loaded by ``load_image`` in a harness child process; the parent waits with a per-file timeout. Outcomes:

* ``loaded`` - a MedicalImage (float32 pixels in [0, 1] checked);
* ``typed``  - a ``ragmed.errors.RagmedError`` subclass whose message starts with the file's path relative to the
  fuzz root (counted by class; decoder-worker crashes / timeouts that load_image contained are counted as well);
* failures: ``untyped`` (any other exception), ``crash`` (the harness child died), ``hang`` (no answer within the
  per-file timeout), ``bad_image`` (a MedicalImage with wrong dtype / range), ``phi`` (a seed's identifying header
  value - patient name / ID / birth date, accession number, institution, ... - appears in an error message or the
  MedicalImage's repr).

    nice -n 10 python eval/fuzz_dicom.py --n 10000 --seed 0          # the full run, writes eval/results/fuzz_dicom.json
    python eval/fuzz_dicom.py --n 200 --seed 1 --out /tmp/fuzz.json  # a short run

Mutated files live in a temporary directory (failures are kept under ``--keep DIR`` for reproduction).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "eval" / "results" / "fuzz_dicom.json"
MAX_SEED_BYTES = 600_000
PER_DIR_SEEDS = 12

# Identifying attributes whose seed values must never surface (all removed / replaced by the PS3.15 Basic Profile).
PHI_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
                "InstitutionAddress", "ReferringPhysicianName", "OperatorsName", "PerformingPhysicianName",
                "StudyID", "OtherPatientIDs", "PatientAddress", "StationName", "DeviceSerialNumber")

TS_UIDS = [
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.203",
]
VRS = [b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF",
       b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
       b"UR", b"US", b"UT", b"UV"]
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}


# ----------------------------------------------------------------------------------------------- seeds


def default_seed_dir() -> Path | None:
    d = Path(os.environ.get("RAGMED_DATA", REPO.parent / "shared" / "data")) / "dicom"
    return d if d.is_dir() else None


def find_seeds(seed_dir: Path | None, max_bytes: int = MAX_SEED_BYTES, limit: int | None = None) -> list[Path]:
    """DICOM files (DICM preamble) up to ``max_bytes``: every one with pixel data and about eight without, sorted by
    path (pydicom's own test files when ``seed_dir`` is None); ``limit`` takes an evenly spaced subset."""
    if seed_dir is None:
        import pydicom.data

        seed_dir = Path(pydicom.data.get_testdata_file("CT_small.dcm", download=False)).parent
    images, others = [], []
    for p in sorted(seed_dir.rglob("*")):
        if not p.is_file() or p.stat().st_size > max_bytes or p.stat().st_size < 132:
            continue
        data = p.read_bytes()
        if data[128:132] == b"DICM":
            (images if b"\xe0\x7f\x10\x00" in data else others).append(p)
    # at most PER_DIR_SEEDS images per folder (a 150-file series would otherwise dominate), and a few objects
    # without pixel data (SR, RT, DICOMDIR)
    by_dir: dict[Path, list[Path]] = collections.defaultdict(list)
    for p in images:
        by_dir[p.parent].append(p)
    out = []
    for ps in by_dir.values():
        out += ps[:: max(1, -(-len(ps) // PER_DIR_SEEDS))]
    out = sorted(out) + others[:: max(1, len(others) // 8)]
    if limit is not None and len(out) > limit:
        idx = np.linspace(0, len(out) - 1, limit).round().astype(int)
        out = [out[i] for i in sorted(set(idx))]
    return out


def seed_phi(path: Path) -> set[str]:
    """Identifying string values of a seed (length >= 4) to look for in outputs."""
    import warnings

    import pydicom

    vals: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001
            return vals
        for kw in PHI_KEYWORDS:
            try:
                v = ds.get(kw)
            except Exception:  # noqa: BLE001
                continue
            if v is None:
                continue
            items = v if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" else [v]
            for item in items:
                s = str(item).strip()
                for part in {s, s.replace("^", " ").strip(), *s.split("^")}:
                    part = part.strip()
                    # skip values that are only digits of length < 6 or generic words that a reason could contain
                    if len(part) >= 4 and not (part.isdigit() and len(part) < 6) and part.lower() not in _GENERIC:
                        vals.add(part)
    return vals


_GENERIC = {"anonymized", "anonymous", "none", "unknown", "test", "dicom", "image", "study", "series", "frame",
            "pixel", "data", "file", "rows", "columns", "jpeg", "lossless", "baseline", "extended"}


# ----------------------------------------------------------------------------------------------- mutations


def _headers(data: bytes, rng: np.random.Generator, k: int = 64) -> list[int]:
    """Offsets (after the 132-byte preamble) that look like explicit-VR element headers (tag + valid VR)."""
    vrs = set(VRS)
    hits = []
    start = 132 if len(data) > 132 else 0
    end = min(len(data) - 8, start + 20000)
    for i in range(start, end, 2):
        if data[i + 4:i + 6] in vrs:
            hits.append(i)
    if len(hits) > k:
        hits = list(rng.choice(hits, size=k, replace=False))
    return hits


def _find_tag(data: bytes, group: int, elem: int) -> list[int]:
    pat = group.to_bytes(2, "little") + elem.to_bytes(2, "little")
    out, i = [], data.find(pat, 128)
    while i != -1 and len(out) < 8:
        out.append(i)
        i = data.find(pat, i + 1)
    return out


def _value_span(data: bytes, i: int) -> tuple[int, int] | None:
    """(start, length) of the value of the element whose header starts at i (explicit or implicit VR LE)."""
    if i + 8 > len(data):
        return None
    vr = data[i + 4:i + 6]
    if vr in set(VRS):
        if vr in LONG_VRS:
            if i + 12 > len(data):
                return None
            return i + 12, int.from_bytes(data[i + 8:i + 12], "little")
        return i + 8, int.from_bytes(data[i + 6:i + 8], "little")
    return i + 8, int.from_bytes(data[i + 4:i + 8], "little")


def _pixel_offset(data: bytes) -> int | None:
    hits = _find_tag(data, 0x7FE0, 0x0010)
    return hits[-1] if hits else None


def m_bitflip(d: bytearray, rng, others) -> str:
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(0, len(d)))
        d[i] ^= 1 << int(rng.integers(0, 8))
    return "bitflip"


def m_bitflip_pixel(d: bytearray, rng, others) -> str:
    off = _pixel_offset(bytes(d))
    if off is None or off + 16 >= len(d):
        return m_bitflip(d, rng, others)
    span = min(len(d) - off, 512 if rng.random() < 0.7 else len(d) - off)
    for _ in range(int(rng.integers(1, 17))):
        i = off + int(rng.integers(0, span))
        d[i] ^= 1 << int(rng.integers(0, 8))
    return "bitflip_pixel"


def m_random_bytes(d: bytearray, rng, others) -> str:
    n = int(rng.integers(1, 64))
    i = int(rng.integers(0, max(1, len(d) - n)))
    d[i:i + n] = rng.integers(0, 256, size=min(n, len(d) - i), dtype=np.uint8).tobytes()
    return "random_bytes"


def m_truncate(d: bytearray, rng, others) -> str:
    cut = int(rng.integers(0, len(d)))
    del d[cut:]
    return "truncate"


def m_insert_delete(d: bytearray, rng, others) -> str:
    i = int(rng.integers(0, len(d)))
    if rng.random() < 0.5:
        d[i:i] = rng.integers(0, 256, size=int(rng.integers(1, 33)), dtype=np.uint8).tobytes()
        return "insert"
    del d[i:i + int(rng.integers(1, 33))]
    return "delete"


def m_splice(d: bytearray, rng, others) -> str:
    other = others[int(rng.integers(0, len(others)))]
    i = int(rng.integers(0, len(d)))
    j = int(rng.integers(0, len(other)))
    d[i:] = other[j:j + (len(d) - i)]
    return "splice"


def m_tag(d: bytearray, rng, others) -> str:
    hs = _headers(bytes(d), rng)
    if not hs:
        return m_random_bytes(d, rng, others)
    i = int(hs[int(rng.integers(0, len(hs)))])
    choice = rng.random()
    if choice < 0.3:
        d[i:i + 4] = rng.integers(0, 256, size=4, dtype=np.uint8).tobytes()
    elif choice < 0.6:
        d[i:i + 2] = (int.from_bytes(d[i:i + 2], "little") | 1).to_bytes(2, "little")  # make it private
    else:
        d[i:i + 4] = bytes([0xFE, 0xFF, 0x00, 0xE0]) if rng.random() < 0.5 else bytes([0xFE, 0xFF, 0xDD, 0xE0])
    return "tag"


def m_length(d: bytearray, rng, others) -> str:
    hs = _headers(bytes(d), rng)
    if not hs:
        return m_random_bytes(d, rng, others)
    i = int(hs[int(rng.integers(0, len(hs)))])
    vr = bytes(d[i + 4:i + 6])
    long = vr in LONG_VRS
    choices = [0, 1, 3, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, int(rng.integers(0, 1 << 16)), len(d) * 2]
    v = choices[int(rng.integers(0, len(choices)))]
    if long:
        d[i + 8:i + 12] = (v & 0xFFFFFFFF).to_bytes(4, "little")
    else:
        d[i + 6:i + 8] = (v & 0xFFFF).to_bytes(2, "little")
    return "length"


def m_vr(d: bytearray, rng, others) -> str:
    hs = _headers(bytes(d), rng)
    if not hs:
        return m_random_bytes(d, rng, others)
    i = int(hs[int(rng.integers(0, len(hs)))])
    if rng.random() < 0.8:
        d[i + 4:i + 6] = VRS[int(rng.integers(0, len(VRS)))]
    else:
        d[i + 4:i + 6] = rng.integers(0, 256, size=2, dtype=np.uint8).tobytes()
    return "vr"


def _set_us(d: bytearray, group: int, elem: int, value: int) -> bool:
    done = False
    for i in _find_tag(bytes(d), group, elem):
        span = _value_span(bytes(d), i)
        if span and span[1] == 2 and span[0] + 2 <= len(d):
            d[span[0]:span[0] + 2] = (value & 0xFFFF).to_bytes(2, "little")
            done = True
    return done


def _set_is(d: bytearray, group: int, elem: int, digits: str) -> bool:
    done = False
    for i in _find_tag(bytes(d), group, elem):
        span = _value_span(bytes(d), i)
        if span and 0 < span[1] <= 12 and span[0] + span[1] <= len(d):
            v = digits[: span[1]].ljust(span[1])
            d[span[0]:span[0] + span[1]] = v.encode()
            done = True
    return done


def m_huge_dims(d: bytearray, rng, others) -> str:
    what = int(rng.integers(0, 5))
    big = [0xFFFF, 0, 1, 0x8000, int(rng.integers(2, 1 << 16))]
    if what == 0:
        ok = _set_us(d, 0x0028, 0x0010, big[int(rng.integers(0, len(big)))])
        ok |= _set_us(d, 0x0028, 0x0011, big[int(rng.integers(0, len(big)))])
        name = "rows_columns"
    elif what == 1:
        ok = _set_is(d, 0x0028, 0x0008, ["99999999", "2147483647", "0", "-1", "1e9", "X"][int(rng.integers(0, 6))])
        name = "frames"
    elif what == 2:
        ok = _set_us(d, 0x0028, 0x0002, [0, 2, 3, 4, 0xFFFF][int(rng.integers(0, 5))])
        name = "samples"
    elif what == 3:
        ok = _set_us(d, 0x0028, 0x0100, [0, 1, 7, 12, 24, 32, 64, 0xFFFF][int(rng.integers(0, 8))])
        ok |= _set_us(d, 0x0028, 0x0101, [0, 1, 12, 16, 33, 0xFFFF][int(rng.integers(0, 6))])
        name = "bits"
    else:
        ok = _set_us(d, 0x0028, 0x0010, 0xFFFF) and _set_us(d, 0x0028, 0x0011, 0xFFFF)
        ok |= _set_is(d, 0x0028, 0x0008, "2147483647")
        name = "all_huge"
    return name if ok else m_bitflip(d, rng, others)


def m_ts_swap(d: bytearray, rng, others) -> str:
    for i in _find_tag(bytes(d), 0x0002, 0x0010):
        span = _value_span(bytes(d), i)
        if span and 10 < span[1] <= 64 and span[0] + span[1] <= len(d):
            fits = [u for u in TS_UIDS if len(u) <= span[1]]
            u = fits[int(rng.integers(0, len(fits)))]
            d[span[0]:span[0] + span[1]] = u.encode().ljust(span[1], b"\0")
            return "ts_swap"
    return m_bitflip(d, rng, others)


def m_codec_header(d: bytearray, rng, others) -> str:
    """Image size / segment fields inside the compressed stream itself: JPEG 2000 SIZ, JPEG and JPEG-LS SOF, RLE
    header (the DICOM header still declares the true size, so only the decoder sees the lie)."""
    data = bytes(d)
    off = _pixel_offset(data)
    if off is None:
        return m_bitflip(d, rng, others)
    sizes = [0, 1, 0xFFFF, 0x7FFF, int(rng.integers(2, 1 << 16))]
    i = data.find(b"\xff\x4f\xff\x51", off)  # J2K SOC + SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz ... Csiz
    if i != -1 and i + 42 <= len(d):
        big = [0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 60000, int(rng.integers(2, 1 << 20))]
        field = int(rng.integers(0, 7))
        if field < 6:
            at = i + 8 + 4 * [0, 1, 4, 5, 2, 3][field]
            d[at:at + 4] = big[int(rng.integers(0, len(big)))].to_bytes(4, "big")
        else:
            d[i + 40:i + 42] = int(rng.choice([0, 4, 255, 16384])).to_bytes(2, "big")  # Csiz: components
        return "codec_j2k_siz"
    for marker in (b"\xff\xf7", b"\xff\xc0", b"\xff\xc1", b"\xff\xc2", b"\xff\xc3"):  # JPEG-LS / JPEG SOF
        i = data.find(marker, off)
        if i != -1 and i + 10 <= len(d):
            what = int(rng.integers(0, 3))
            if what == 0:
                d[i + 5:i + 7] = sizes[int(rng.integers(0, len(sizes)))].to_bytes(2, "big")  # lines
            elif what == 1:
                d[i + 7:i + 9] = sizes[int(rng.integers(0, len(sizes)))].to_bytes(2, "big")  # samples per line
            else:
                d[i + 4] = int(rng.choice([0, 1, 2, 15, 16, 17, 255]))  # precision
            return "codec_jpeg_sof"
    if data.find(b"\xfe\xff\x00\xe0", off) != -1:  # encapsulated: assume RLE, corrupt the first fragment's header
        items = [j for j in range(off, min(len(data), off + 4096)) if data[j:j + 4] == b"\xfe\xff\x00\xe0"]
        if len(items) >= 2 and items[1] + 8 + 64 <= len(d):
            h = items[1] + 8
            if rng.random() < 0.5:
                d[h:h + 4] = int(rng.choice([0, 1, 3, 15, 16, 255, 0xFFFFFFFF])).to_bytes(4, "little")
            else:
                k = int(rng.integers(1, 16))
                d[h + 4 * k:h + 4 * k + 4] = int(rng.choice([0, 63, 64, 0xFFFFFFFF, len(d) * 4])).to_bytes(4, "little")
            return "codec_rle_header"
    return m_bitflip_pixel(d, rng, others)


MUTATORS = [m_bitflip, m_bitflip_pixel, m_bitflip_pixel, m_random_bytes, m_truncate, m_insert_delete, m_splice,
            m_tag, m_length, m_length, m_vr, m_huge_dims, m_huge_dims, m_ts_swap, m_codec_header, m_codec_header]


def mutate(data: bytes, rng: np.random.Generator, others: list[bytes]) -> tuple[bytes, str]:
    d = bytearray(data)
    names = []
    for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
        if len(d) < 2:
            break
        names.append(MUTATORS[int(rng.integers(0, len(MUTATORS)))](d, rng, others))
    return bytes(d), "+".join(names) or "none"


# ----------------------------------------------------------------------------------------------- harness child


def child_main() -> None:  # pragma: no cover - runs in a subprocess
    """Read ``path\\troot`` lines; answer one JSON line each."""
    import ragmed.io
    from ragmed.errors import RagmedError

    out = sys.stdout
    for line in sys.stdin:
        path, root = line.rstrip("\n").split("\t")
        t = time.perf_counter()
        try:
            img = ragmed.io.load_image(path, root=root, isolate=os.environ.get("RAGMED_FUZZ_ISOLATE", "auto"))
            px = img.pixels
            good = (px.dtype == np.float32 and px.ndim in (2, 3) and px.size > 0
                    and bool(np.isfinite(px).all()) and float(px.min()) >= 0.0 and float(px.max()) <= 1.0)
            rec = {"outcome": "loaded" if good else "bad_image", "text": repr(img) + " " + repr(img.meta)}
        except RagmedError as e:
            rec = {"outcome": "typed", "error": type(e).__name__, "text": str(e)}
        except BaseException as e:  # noqa: BLE001 - this is what the fuzzer looks for
            rec = {"outcome": "untyped", "error": type(e).__name__, "text": str(e)[:300]}
        rec["seconds"] = time.perf_counter() - t
        out.write(json.dumps(rec) + "\n")
        out.flush()


class Harness:
    """One child process that loads files on request; replaced when it crashes or hangs."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=self.env, text=True, bufsize=1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def load(self, path: Path, root: Path, timeout: float) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(f"{path}\t{root}\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.stop()
            return {"outcome": "crash", "error": "harness child gone"}
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.stop()
            return {"outcome": "hang", "error": f"no answer in {timeout:g} s"}
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            return {"outcome": "crash", "error": f"harness child exited with {code}"}
        return json.loads(line)


# ----------------------------------------------------------------------------------------------- runner


def run_fuzz(n: int, seed: int = 0, seeds: list[Path] | None = None, timeout: float = 120.0,
             decode_timeout: float = 30.0, keep: Path | None = None, progress: bool = True,
             isolate: str = "auto") -> dict:
    seeds = seeds if seeds is not None else find_seeds(default_seed_dir())
    if not seeds:
        raise SystemExit("no DICOM seed files found")
    datas = [p.read_bytes() for p in seeds]
    phi = [seed_phi(p) for p in seeds]
    env = dict(os.environ, RAGMED_DECODE_TIMEOUT=str(decode_timeout), RAGMED_FUZZ_ISOLATE=isolate)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    harness = Harness(env)
    counts: collections.Counter = collections.Counter()
    errors: collections.Counter = collections.Counter()
    untyped: collections.Counter = collections.Counter()
    by_mutation: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    contained = collections.Counter()
    contained_cases: list[dict] = []
    failures: list[dict] = []
    seconds: list[float] = []
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="ragmed-fuzz-"))
    try:
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            k = int(rng.integers(0, len(datas)))
            data, how = mutate(datas[k], rng, datas)
            rel = f"case{i:05d}.dcm"
            path = tmp / rel
            path.write_bytes(data)
            rec = harness.load(path, tmp, timeout)
            outcome = rec["outcome"]
            text = rec.get("text", "")
            if outcome == "typed":
                errors[rec["error"]] += 1
                if not text.startswith(rel + ": "):
                    outcome = "unnamed_error"
                kind = ("decoder_crash" if "decoder crashed" in text else "decoder_timeout"
                        if "did not finish within" in text else "decoder_out_of_memory"
                        if "ran out of memory" in text else None)
                if kind:
                    contained[kind] += 1
                    contained_cases.append({"case": i, "seed_file": seeds[k].name, "mutation": how, "kind": kind})
                    if keep is not None:
                        keep.mkdir(parents=True, exist_ok=True)
                        shutil.copy(path, keep / rel)
            elif outcome == "untyped":
                untyped[rec["error"]] += 1
            leaked = [v for v in phi[k] if v in text]
            if leaked and outcome in ("typed", "loaded"):
                outcome = "phi"
            counts[outcome] += 1
            by_mutation[how.split("+")[0]][outcome] += 1
            if "seconds" in rec:
                seconds.append(rec["seconds"])
            if outcome not in ("typed", "loaded"):
                fail = {"case": i, "seed_file": seeds[k].name, "mutation": how, "outcome": outcome,
                        "error": rec.get("error")}
                failures.append(fail)
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, keep / rel)
            path.unlink(missing_ok=True)
            if progress and (i + 1) % 500 == 0:
                el = time.perf_counter() - t0
                print(f"  {i + 1}/{n}  {dict(counts)}  {el:.0f} s", file=sys.stderr, flush=True)
    finally:
        harness.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - t0
    s = np.array(seconds) if seconds else np.zeros(1)
    return {
        "n": n, "seed": seed, "seed_files": len(seeds), "isolate": isolate,
        "counts": dict(sorted(counts.items())),
        "failures_total": sum(v for k, v in counts.items() if k not in ("typed", "loaded")),
        "typed_errors": dict(errors.most_common()),
        "untyped_exceptions": dict(untyped.most_common()),
        "contained_by_isolation": dict(contained),
        "contained_cases": contained_cases[:200],
        "by_mutation": {k: dict(v) for k, v in sorted(by_mutation.items())},
        "failures": failures[:200],
        "per_file_seconds": {"mean": round(float(s.mean()), 4), "p50": round(float(np.percentile(s, 50)), 4),
                             "p99": round(float(np.percentile(s, 99)), 4), "max": round(float(s.max()), 3)},
        "timeouts": {"per_file_s": timeout, "decoder_s": decode_timeout},
        "elapsed_s": round(elapsed, 1),
    }


def isolation_overhead(files: list[Path], repeats: int = 3) -> dict:
    """Median wall time per file of load_image with and without the decoder worker (compressed seeds only)."""
    import warnings

    import pydicom

    import ragmed.io
    from ragmed.errors import RagmedError
    from ragmed.io import _isolate

    comp = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in files:
            try:
                ts = pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
                if ts.is_compressed:
                    ragmed.io.load_image(p, isolate="never")
                    comp.append(p)
            except (RagmedError, Exception):  # noqa: BLE001 - only files that load are timed
                continue
    t = time.perf_counter()
    ragmed.io.load_image(comp[0], isolate="always")  # start the worker once (its cost is reported separately)
    startup = time.perf_counter() - t
    res = {}
    for mode in ("never", "auto"):
        per = []
        for p in comp:
            ts = []
            for _ in range(repeats):
                t = time.perf_counter()
                ragmed.io.load_image(p, isolate=mode)
                ts.append(time.perf_counter() - t)
            per.append(float(np.median(ts)))
        res[mode] = per
    never, auto = np.array(res["never"]), np.array(res["auto"])
    _isolate.shutdown()
    return {
        "files": len(comp), "repeats": repeats,
        "in_process_total_s": round(float(never.sum()), 3), "isolated_total_s": round(float(auto.sum()), 3),
        "overhead_per_file_ms_median": round(float(np.median(auto - never)) * 1000, 2),
        "overhead_ratio_total": round(float(auto.sum() / never.sum()), 3),
        "worker_first_call_s": round(startup, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds-dir", type=Path, default=None, help="seed DICOM files (default $RAGMED_DATA/dicom)")
    ap.add_argument("--max-seed-bytes", type=int, default=MAX_SEED_BYTES)
    ap.add_argument("--timeout", type=float, default=120.0, help="per-file timeout of the harness (s)")
    ap.add_argument("--decode-timeout", type=float, default=30.0, help="RAGMED_DECODE_TIMEOUT for load_image (s)")
    ap.add_argument("--isolate", choices=("auto", "always", "never"), default="auto",
                    help="load_image's isolate= (never: shows what the decoder worker contains)")
    ap.add_argument("--keep", type=Path, default=None, help="copy failing mutated files here")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--no-overhead", action="store_true", help="skip the isolation overhead measurement")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child_main()
        return 0
    seed_dir = a.seeds_dir or default_seed_dir()
    seeds = find_seeds(seed_dir, a.max_seed_bytes)
    print(f"fuzzing load_image: {a.n} mutated files from {len(seeds)} seeds in {seed_dir or 'pydicom test files'}",
          file=sys.stderr)
    result = run_fuzz(a.n, a.seed, seeds, a.timeout, a.decode_timeout, a.keep, isolate=a.isolate)
    if not a.no_overhead:
        result["isolation_overhead"] = isolation_overhead(seeds)
    result = {"command": "python eval/fuzz_dicom.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "seeds_dir": str(seed_dir) if seed_dir else "pydicom test files", **result}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, a.out)
    print(json.dumps({k: result[k] for k in ("counts", "failures_total", "typed_errors", "untyped_exceptions",
                                             "contained_by_isolation", "per_file_seconds", "elapsed_s")}, indent=1))
    if "isolation_overhead" in result:
        print("isolation overhead:", json.dumps(result["isolation_overhead"]))
    print(f"wrote {a.out}")
    return 0 if result["failures_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
