#!/usr/bin/env bash
# Issue 17's realistic protocols at 128^3 on a many-core GPU machine, in one command of < 10 min:
# every method (learned ones on the GPU through Keras on PyTorch, BM3D on the CPU cores) and the
# Noise2Inverse variants of §4, each as a `benchmarks/bench_options.py` process (18 at once), merged
# into one table. For a machine with Python 3.12, PyTorch, numpy, numba, scipy, scikit-image, h5py,
# matplotlib and tqdm but no Keras, no BM3D and no internet: Keras 3 (namex, optree) and bm3d
# (bm4d, PyWavelets) come as wheels in .whl/ (git-ignored; carry it), downloaded beforehand with
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#       -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0 bm3d==4.0.3 bm4d==4.2.5 PyWavelets==1.9.0
#
# Results in $OUT (default /tmp/options_out): runs.jsonl (one line per run), tables.md (merged),
# status.txt (exit status per run: 124 = over LIMIT seconds) and logs.tgz.
# Dry run elsewhere: SIZE=32 STEPS=20 LIMIT=300 SITE=none bash benchmarks/options_device.sh
# PLAN=n2i: only Noise2Inverse and its §4 options on under-blur and real-like (12 processes).

set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export OUT="${OUT:-/tmp/options_out}"
mkdir -p "$OUT"
LOGS=$(mktemp -d)
SIZE="${SIZE:-128}"
LIMIT="${LIMIT:-500}"
PY="${PY:-python3}"
T0=$SECONDS
if [ "${SITE:-/tmp/site}" != none ]; then
    SITE="${SITE:-/tmp/site}"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        || { echo "wheel install failed" | tee "$OUT/status.txt"; exit 3; }
    export PYTHONPATH="$SITE:$PWD" KERAS_BACKEND=torch
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1
export KERAS_HOME=/tmp/keras_home TF_CPP_MIN_LOG_LEVEL=2
STEPS_ARG=()
[ -n "${STEPS:-}" ] && STEPS_ARG=(--n2i-steps "$STEPS")
J="$OUT/runs.jsonl"
{ nvidia-smi -L 2>/dev/null; $PY -c "import keras, numpy; print('keras', keras.__version__, keras.backend.backend(), 'numpy', numpy.__version__)"; } \
    > "$OUT/status.txt" 2>&1

run() {
    local name=$1
    shift
    timeout -k 5 "$LIMIT" $PY benchmarks/bench_options.py --size "$SIZE" --jsonl "$J" "${STEPS_ARG[@]}" "$@" \
        > "$LOGS/$name.log" 2>&1
    echo "$name: exit $? after $((SECONDS - T0)) s" >> "$OUT/status.txt"
}

if [ "${PLAN:-all}" = n2i ]; then
    # only Noise2Inverse and its options (§4), 12 processes: none + n2i per case and variant
    for case in under-blur real-like; do
        run "$case-base" --case "$case" --methods none n2i &
        run "$case-steps" --case "$case" --label steps-9600 --n2i steps=9600 &
        run "$case-filters" --case "$case" --label filters-32 --n2i base_filters=32 &
        run "$case-context" --case "$case" --label context-0 --n2i context=0 &
        run "$case-seed1" --case "$case" --label seed-1 --n2i seed=1 &
        run "$case-seed2" --case "$case" --label seed-2 --n2i seed=2 &
    done
else
    for case in under-blur real-like textured-3000 standard; do
        run "$case-learned" --case "$case" --methods none paper n2i n2i-counts --ladder &
        run "$case-bm3d" --case "$case" --methods none bm3d &
        run "$case-bm3d-slices" --case "$case" --methods none bm3d-slices &
    done
    for case in under-blur real-like; do
        run "$case-steps" --case "$case" --label steps-9600 --n2i steps=9600 &
        (run "$case-filters" --case "$case" --label filters-32 --n2i base_filters=32
         run "$case-seed1" --case "$case" --label seed-1 --n2i seed=1) &
        (run "$case-context" --case "$case" --label context-0 --n2i context=0
         run "$case-seed2" --case "$case" --label seed-2 --n2i seed=2) &
    done
fi
wait
$PY benchmarks/bench_options.py --merge "$J" > "$OUT/tables.md" 2>&1
tar czf "$OUT/logs.tgz" -C "$LOGS" .
echo "all done in $((SECONDS - T0)) s" >> "$OUT/status.txt"
cat "$OUT/status.txt" "$OUT/tables.md"
