#!/usr/bin/env bash
# GPU run of the "keras" reconstruction backend and of benchmarks/bench_gpu.py, for a machine
# with Python 3.12 (python3), PyTorch with CUDA, numpy, numba, scipy, scikit-image, h5py, tqdm,
# but no Keras and no internet.
#
# Keras 3 and the two dependencies of it that such a machine lacks (namex, optree) come as
# wheels in .whl/ (git-ignored; carry it with the working tree), downloaded beforehand with
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#       keras==3.15.1 namex==0.1.0 optree==0.20.0
#
# The package is not installed: it is imported from the repository root (PYTHONPATH).
# Results go to $OUT (default /tmp/gpu_out): check.jsonl, bench_gpu.jsonl and the logs.
# Budget: about 7 minutes in all (install < 30 s, check <= 100 s, benchmark <= 270 s).
#
#   bash benchmarks/gpu_device.sh
#
# For a dry run elsewhere: WHEELS (wheel folder, default .whl), SITE (install target, default
# /tmp/site), SPEED_SIZES (edges of the timing runs, default "256 512") and BENCH_ARGS (extra
# arguments of bench_gpu.py, default none: full size).

set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export OUT="${OUT:-/tmp/gpu_out}"
mkdir -p "$OUT"
WHEELS="${WHEELS:-.whl}"
SITE="${SITE:-/tmp/site}"
export SPEED_SIZES="${SPEED_SIZES:-256 512}"
T0=$SECONDS

echo "== install wheels into $SITE: $(ls "$WHEELS"/*.whl 2>/dev/null | tr '\n' ' ')"
if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "no wheels in $WHEELS/: carry the .whl folder with the working tree" | tee "$OUT/error.txt"
    exit 2
fi
if ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl; then
    echo "pip install failed: unpacking the wheels instead (a wheel is a zip of its site-packages files)"
    mkdir -p "$SITE"
    for w in "$WHEELS"/*.whl; do python3 -m zipfile -e "$w" "$SITE" || exit 3; done
fi
export PYTHONPATH="$SITE:$PWD"
export KERAS_BACKEND=torch PYTHONUNBUFFERED=1 KERAS_HOME=/tmp/keras_home
export TF_CPP_MIN_LOG_LEVEL=2

echo "== machine"
{
    nvidia-smi -L
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 - <<'PY'
import platform

import keras
import numba
import numpy
import torch

print("python", platform.python_version(), "numpy", numpy.__version__, "numba", numba.__version__)
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("torch device:", torch.cuda.get_device_name(0), torch.cuda.mem_get_info())
print("keras", keras.__version__, "backend", keras.backend.backend(), "from", keras.__file__)
PY
} 2>&1 | tee "$OUT/env.txt"

if [ -n "${SKIP_CHECK:-}" ]; then echo "== check skipped (SKIP_CHECK)"; else
echo "== check: keras backend on CUDA against the numba fbp backend ($((SECONDS - T0)) s)"
timeout -k 10 100 python3 - <<'PY' 2>&1 | tee "$OUT/check.log"
import json
import os
import time

import numpy as np
import torch

from bluesky_lowdose.physics import make_phantom
from bluesky_lowdose.recon import keras_fbp, reconstruct

out = open(os.path.join(os.environ["OUT"], "check.jsonl"), "w")


def emit(**row):
    print(json.dumps(row), flush=True)
    out.write(json.dumps(row) + "\n")
    out.flush()


emit(device=keras_fbp.describe_device(), auto_contraction=keras_fbp.resolve_contraction(None),
     matmul_precision=torch.get_float32_matmul_precision())
ok = True
# correctness: 64^3 (and an odd width, off-centre axis, irregular angles), both contractions
cases = [
    (64, np.linspace(0.0, 180.0, 91), None, "parzen", True),
    (64, np.linspace(0.0, 180.0, 91), 29.6, "ramp", False),
    (65, np.sort(np.random.default_rng(1).uniform(0.0, 200.0, 77)), 33.4, "hann", False),
]
for size, theta, center, filt, mask in cases:
    p = make_phantom(size, seed=0).project_many(theta)
    ref = reconstruct(p, theta, backend="fbp", center=center, filter=filt, mask=mask)
    for contraction in ("einsum", "multiply"):
        keras_fbp.CONTRACTION = contraction
        rec = reconstruct(p, theta, backend="keras", center=center, filter=filt, mask=mask)
        diff = float(np.abs(rec - ref).max())
        scale = float(np.abs(ref).max())
        good = diff < 1e-4 * scale
        ok &= good
        emit(check=f"{size}^3 keras vs fbp", center=center, filter=filt, angles=int(theta.size),
             contraction=contraction, max_abs_diff=diff, max_abs=scale, rel=diff / scale, ok=good)
keras_fbp.CONTRACTION = "auto"

# speed: 256^3 against the CPU backend, then 512^3 with a few chunkings (data tiled, as the bench)
def volume_input(n):
    theta = np.linspace(0.0, 180.0, n, endpoint=False)
    small = make_phantom(128, seed=1).project_many(theta[:128]).astype(np.float32)
    return np.resize(small, (n, n, n)), theta

small_n, large_n = (int(v) for v in os.environ["SPEED_SIZES"].split())
cuda = torch.cuda.is_available()
li, theta = volume_input(small_n)
for backend in ("fbp", "keras"):
    reconstruct(li[:, :4], theta, backend=backend)  # compile / warm up
    t = time.perf_counter()
    reconstruct(li, theta, backend=backend)
    emit(speed=f"{small_n}^3, {small_n} angles", backend=backend, chunk_slices="default", seconds=time.perf_counter() - t)
li, theta = volume_input(large_n)
keras_fbp.MEMORY_BYTES = 8 * 2**30
for contraction in ("einsum", "multiply"):
    keras_fbp.CONTRACTION = contraction
    for chunk in (16, 64, 128):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        reconstruct(li, theta, backend="keras", chunk_slices=chunk)
        emit(speed=f"{large_n}^3, {large_n} angles", backend="keras", contraction=contraction,
             chunk_slices=chunk, memory_bytes=keras_fbp.MEMORY_BYTES, seconds=time.perf_counter() - t,
             peak_gpu_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None)
emit(check="all", ok=bool(ok))
PY
echo "check exit status ${PIPESTATUS[0]} ($((SECONDS - T0)) s)"
fi

echo "== bench_gpu.py at full size ($((SECONDS - T0)) s)"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of words
timeout -k 10 "${BENCH_TIMEOUT:-270}" python3 benchmarks/bench_gpu.py --json ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_gpu.log" \
    | grep --line-buffered '^{' | tee "$OUT/bench_gpu.jsonl"
echo "bench exit status ${PIPESTATUS[0]} (124: timed out; the rows printed so far are kept) ($((SECONDS - T0)) s)"
