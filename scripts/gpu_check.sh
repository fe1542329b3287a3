#!/usr/bin/env bash
# The checks that need a CUDA device, in one command (at most 7.5 minutes on one GPU: the
# steps' time limits add up to 430 s):
#
#     bash scripts/gpu_check.sh            # from the repository root; logs go to $OUT or ./gpu_check/
#
# Needs only torch with CUDA (PYTHONPATH=src, nothing installed). pytest runs the CUDA tests
# where it is installed; transformers may be missing or older (the HF tests are not run).
# Steps, each under its own time limit:
#   1. the CUDA tests (pytest -m cuda over the core tests: CUDA equals CPU, one sync per call)
#   2. bench_core.py on CUDA: the corpus, float32 and bfloat16, dims 896 and 3584
#   3. bench_device.py: sync-free against data-sized, host syncs per call, dims 896 and 3584
#   4. bench_scaling.py on CUDA: the 512 x 196 x 896 row at retention 10 %
# and one summary table at the end (step, exit status, seconds, log file).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
LOGS="${OUT:-$PWD/gpu_check}"
mkdir -p "$LOGS"

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: torch sees no CUDA device; nothing to check" >&2
    exit 2
fi
"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))' \
    | tee "$LOGS/00_device.log"

SUMMARY=()
step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    local log="$LOGS/$name.log" t0 rc
    echo "== $name: $*"
    t0=$(date +%s)
    timeout "$limit" "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    SUMMARY+=("$(printf '%-14s %6s %6ss  %s' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$log")")
}

if "$PY" -c 'import pytest' 2>/dev/null; then
    step 1_cuda_tests 100 "$PY" -m pytest -q -rs -m cuda -p no:cacheprovider \
        tests/test_core_invariants.py tests/test_core_sync_free.py
else
    SUMMARY+=("$(printf '%-14s %6s %6ss  %s' 1_cuda_tests skip 0 "pytest not installed")")
fi
step 2_bench_core 140 "$PY" benchmarks/bench_core.py --device cuda --similarity-dtypes float32 bfloat16 --repeat 2
step 3_bench_device 100 "$PY" benchmarks/bench_device.py --device cuda --dims 896 3584 --repeat 3
step 4_scaling_512 90 "$PY" benchmarks/bench_scaling.py --device cuda --frames 512 --generators mixed

echo
echo "gpu_check summary (exit 124: the step ran past its limit)"
printf '%-14s %6s %7s  %s\n' step exit time log
for line in "${SUMMARY[@]}"; do echo "$line"; done
