#!/usr/bin/env bash
# The GPU check: hrseg's CUDA tests (tests/test_cuda.py, marker `cuda`) plus the GPU benchmarks, in one run of
# under 8 minutes, written as a record under benchmarks/records/<date>-<gpu>-gpu-check/ (and copied to $OUT
# when that is set, as on a lent machine).
#
# A lent GPU machine reaches no package registry, and its image (Python 3.12, torch, lightning, timm,
# onnxruntime, pytest ...) lacks a few of hrseg's dependencies. So, in two steps:
#
#   bash benchmarks/gpu_check.sh wheels     # here, with network: the missing wheels for CPython 3.12 into
#                                           # benchmarks/.gpu-wheels/ (git-ignored, ~10 MB)
#   bash benchmarks/gpu_check.sh            # there (carry benchmarks/.gpu-wheels): install them, run, record
#
# Environment: PYTHON (default python3), GPU_CHECK_WHEELS (default benchmarks/.gpu-wheels), GPU_CHECK_RECORD
# (record folder), GPU_CHECK_ALLOW_CPU=1 (no GPU: runs every step on the CPU with tiny benchmark settings, to
# check the script itself; the cuda tests then report as skipped and the record says so).
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-benchmarks/.gpu-wheels}
# hrseg's dependencies missing from the GPU image, with their own (versions of the dev environment)
NEEDED="segmentation_models_pytorch albumentations albucore pydantic pydantic_core annotated-types typing-inspection
stringzilla simsimd omegaconf jsonargparse docstring_parser typeshed_client"

if [[ "${1:-}" == "wheels" ]]; then
    pins=$("$PYTHON" -m pip freeze | grep -iE "^($(echo $NEEDED | tr ' ' '|' | sed 's/[-_]/[-_]/g'))==")
    [[ -n "$pins" ]] || { echo "gpu_check: none of the needed packages is installed in $PYTHON's environment" >&2; exit 2; }
    mkdir -p "$WHEELS"
    # --no-deps: their dependencies are either in this list or already on the GPU image
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --dest "$WHEELS" $pins || exit 1
    du -sh "$WHEELS"
    exit 0
fi

START=$(date +%s)
STAMP=$(date -u +%Y-%m-%d)
DEVICE=cuda
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    if [[ "${GPU_CHECK_ALLOW_CPU:-0}" != 1 ]]; then
        echo "gpu_check: torch sees no CUDA GPU here (set GPU_CHECK_ALLOW_CPU=1 to dry-run on the CPU)" >&2
        exit 2
    fi
    DEVICE=cpu
fi
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | awk '{print tolower($NF)}')
RECORD=${GPU_CHECK_RECORD:-benchmarks/records/${STAMP}-${GPU:-cpu}-gpu-check}
mkdir -p "$RECORD"
LOG="$RECORD/gpu_check.log"
: >"$LOG"
step() { echo "[gpu_check $(date -u +%H:%M:%S), +$(($(date +%s) - START)) s] $*" | tee -a "$LOG"; }

# 1. install what the image lacks (no index: only the carried wheels), hrseg itself from the tree
export PYTHONPATH=$PWD NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline
if ! "$PYTHON" -c "import albumentations, jsonargparse, omegaconf, segmentation_models_pytorch" 2>/dev/null; then
    step "installing the carried wheels from $WHEELS"
    ls "$WHEELS"/*.whl >/dev/null 2>&1 || { step "no wheels in $WHEELS: run 'bash benchmarks/gpu_check.sh wheels' first"; exit 2; }
    "$PYTHON" -m pip install --no-index --no-deps --find-links "$WHEELS" "$WHEELS"/*.whl >>"$LOG" 2>&1 ||
        { step "pip install failed (see $LOG)"; exit 1; }
fi
"$PYTHON" -c "import hrseg, albumentations, jsonargparse, segmentation_models_pytorch" >>"$LOG" 2>&1 ||
    { step "hrseg does not import (see $LOG)"; exit 1; }

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
[[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]] || COMMIT="$COMMIT+dirty"
{
    echo "# GPU check ($STAMP)"
    echo
    echo "Command: \`bash benchmarks/gpu_check.sh\`  "
    echo "Commit: $COMMIT; date $(date -u '+%Y-%m-%d %H:%M') UTC; device $DEVICE  "
    echo "Machine: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'no GPU')," \
        "$(nproc) CPU cores; $("$PYTHON" -c 'import platform, torch, lightning, onnxruntime as o; print(f"Python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), lightning {lightning.__version__}, onnxruntime {o.__version__} {o.get_available_providers()}")' 2>&1)"
    echo
} >"$RECORD/README.md"

run() {  # run NAME SECONDS CMD...: a bounded step; its output in NAME.log, its status in the summary
    local name=$1 limit=$2
    shift 2
    step "$name: $*"
    local t0=$(date +%s)
    timeout "$limit" "$@" >"$RECORD/$name.log" 2>&1
    local rc=$?
    local status=$([[ $rc == 0 ]] && echo ok || ([[ $rc == 124 ]] && echo "timed out after $limit s" || echo "exit $rc"))
    step "$name: $status in $(($(date +%s) - t0)) s"
    echo "| $name | \`$*\` | $status | $(($(date +%s) - t0)) s | [$name.log]($name.log) |" >>"$RECORD/steps.md"
}
: >"$RECORD/steps.md"

# 2. the cuda tests (about 2 minutes: a DDP start-up, an export, a few tiny fits)
run tests 200 "$PYTHON" -m pytest tests/test_cuda.py -m cuda -p no:cacheprovider -rs -v -s
# 3. the GPU benchmarks (bounded so that the whole run stays under 8 minutes; --quick on the CPU dry run)
if [[ $DEVICE == cuda ]]; then
    BENCH=(--device cuda --no-isolate --cache /tmp/gpu_check_cache)
    run forward_fp32 100 "$PYTHON" -m benchmarks.run "${BENCH[@]}" --precision fp32 --only forward,train \
        --variants w18_small_v2,w48 --sizes 512x1024,1024x2048 --paths eager,fast,reference --train-variants w48 \
        --out "$RECORD/fp32"
    run backends 90 "$PYTHON" -m benchmarks.backends --device cuda --variants w18_small_v2,w48 --sizes 1024x2048 \
        --no-accuracy --out "$RECORD/backends"
    run demo_fit 70 "$PYTHON" -m hrseg fit --config demo --trainer.accelerator gpu --trainer.devices 1 \
        --trainer.enable_progress_bar false --trainer.default_root_dir /tmp/gpu_check_demo
else
    run forward_quick 300 "$PYTHON" -m benchmarks.run --quick --only forward --out "$RECORD/quick"
fi

{
    echo "| step | command | result | time | log |"
    echo "|---|---|---|---|---|"
    cat "$RECORD/steps.md"
    echo
    echo "Tests (from tests.log):"
    echo
    echo '```'
    grep -E "PASSED|FAILED|SKIPPED|ERROR|max \|diff\||agreement|providers|passed|failed" "$RECORD/tests.log" | tail -40
    echo '```'
    [[ -f "$RECORD/demo_fit.log" ]] && { echo; echo "Demo fit: $(grep -E 'val/mIoU|mIoU' "$RECORD/demo_fit.log" | tail -2 | tr '\n' ' ')"; }
    echo
    echo "Total: $(($(date +%s) - START)) s."
} >>"$RECORD/README.md"
rm -f "$RECORD/steps.md"
step "record: $RECORD"
if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT/$(basename "$RECORD")" && cp -r "$RECORD"/. "$OUT/$(basename "$RECORD")/"
fi
