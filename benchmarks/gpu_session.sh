#!/usr/bin/env bash
# The one script a session with an NVIDIA GPU (H100/H200 class) runs to check and time the CUDA path
# (issue 16), from the repository root:
#
#     bash benchmarks/gpu_session.sh [OUT]        # OUT: where everything goes (default /tmp/ropelib-gpu)
#
# Steps, each with its own time limit (seconds), logs in OUT/*.log:
#   1. the CUDA tests: CUDA-vs-CPU parity, fused AdamW and pinned copies, autocast (tests/test_gpu_path.py)
#   2. which SDPA kernel each encoding's attention runs on (benchmarks/sdpa_backends.py)
#   3. the measured cost of every model of `full` (benchmarks/profile_cost.py --device cuda)
#   4. the whole collection on the `full` profile (run_all.py --profile full --device cuda), into OUT
#      (run cache, results, figures and the executed notebooks all under OUT: nothing in the checkout)
# A step that fails or times out is reported and the script goes on to the next; the exit status is the
# number of failed steps. Set PYTHON to choose the interpreter (default .venv/bin/python, else python), and
# STEPS to run some steps only (e.g. STEPS="1 2 3": the checks, about 10 minutes, without the full run).
set -u
OUT="${1:-/tmp/ropelib-gpu}"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
mkdir -p "$OUT"
export ROPELIB_CACHE_DIR="$OUT/cache" ROPELIB_RESULTS_DIR="$OUT/results" ROPELIB_FIGURES_DIR="$OUT/figures"
failed=0

STEPS="${STEPS:-1 2 3 4}"

step() {  # step NAME LIMIT_S COMMAND...  (NAME starts with the step's number)
    local name="$1" limit="$2"
    shift 2
    case " $STEPS " in *" ${name%%_*} "*) ;; *) return 0 ;; esac
    echo "== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=30 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "   rc=$rc after $((SECONDS - t0))s; last lines of $OUT/$name.log:"
    tail -n 3 "$OUT/$name.log" | sed 's/^/   /'
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 99
step 1_cuda_tests 300 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_gpu_path.py -rs
step 2_sdpa_backends 120 "$PYTHON" benchmarks/sdpa_backends.py --device cuda --length 256 --errors
step 3_profile_cost 600 "$PYTHON" benchmarks/profile_cost.py --profile full --device cuda --steps 10 --warmup 3
step 4_run_all_full 2700 "$PYTHON" run_all.py --profile full --device cuda --output-dir "$OUT/build"
echo "== done: $failed step(s) failed; outputs under $OUT"
exit "$failed"
