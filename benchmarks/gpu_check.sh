#!/usr/bin/env bash
# The GPU check: hrseg's CUDA tests (tests/test_cuda.py, marker `cuda`) plus the GPU benchmarks, in one run of
# under 8 minutes, written as a record under benchmarks/records/<date>-<gpu>-gpu-check/ (and, when $OUT is set
# as on a lent machine, its README.md and the whole record as one archive in $OUT: a lent machine returns at
# most 8 files). The benchmarks, all bf16 autocast:
#   - training, W48, batch 8, 512x1024 crops, channels_last: images/s of the eager step and of the step compiled
#     as `--model.compile true` compiles it (inductor, fullgraph), with the first (compiling) step's time;
#   - inference, W48 and W48+OCR at 1024x2048, batch 1: the eager model and the fast path;
#   - then, if the budget allows, the demo fit on the GPU (its scores go into the record).
#
# A lent GPU machine reaches no package registry, and its image (Python 3.12, torch, lightning, timm,
# onnxruntime, pytest ...) lacks a few of hrseg's dependencies. So, in two steps:
#
#   bash benchmarks/gpu_check.sh wheels     # here, with network: the missing wheels for CPython 3.12 into
#                                           # benchmarks/.gpu-wheels/ (git-ignored, ~10 MB)
#   bash benchmarks/gpu_check.sh            # there (carry benchmarks/.gpu-wheels): install them, run, record
#
# Environment: PYTHON (default python3), GPU_CHECK_WHEELS (default benchmarks/.gpu-wheels), GPU_CHECK_RECORD
# (record folder), GPU_CHECK_COMMIT (the commit to record, where the copied tree has no .git), GPU_CHECK_BUDGET_S
# (default 480: no step starts, and none runs, past it), GPU_CHECK_ALLOW_CPU=1 (no GPU: runs every step on the
# CPU with tiny benchmark settings, the compiled step with aot_eager, to check the script itself; the cuda tests
# then report as skipped and the record says so).
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-benchmarks/.gpu-wheels}
# hrseg's dependencies missing from the GPU image, with their own (versions of the dev environment);
# typing_extensions too: the dev environment's pydantic needs a newer one than an image may hold
NEEDED="segmentation_models_pytorch albumentations albucore pydantic pydantic_core annotated-types typing-inspection
stringzilla simsimd omegaconf jsonargparse docstring_parser typeshed_client typing_extensions"

if [[ "${1:-}" == "wheels" ]]; then
    pins=$("$PYTHON" -m pip freeze | grep -iE "^($(echo $NEEDED | tr ' ' '|' | sed 's/[-_]/[-_]/g'))==")
    [[ -n "$pins" ]] || { echo "gpu_check: none of the needed packages is installed in $PYTHON's environment" >&2; exit 2; }
    mkdir -p "$WHEELS"
    # --no-deps: their dependencies are either in this list or already on the GPU image
    # pip matches platform tags exactly: name the manylinux levels these projects publish
    plats=""
    for p in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 \
        manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do plats="$plats --platform ${p}_x86_64"; done
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $plats --dest "$WHEELS" $pins || exit 1
    du -sh "$WHEELS"
    exit 0
fi

START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-480}
STAMP=$(date -u +%Y-%m-%d)
DEVICE=cuda
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    if [[ "${GPU_CHECK_ALLOW_CPU:-0}" != 1 ]]; then
        echo "gpu_check: torch sees no CUDA GPU here (set GPU_CHECK_ALLOW_CPU=1 to dry-run on the CPU)" >&2
        exit 2
    fi
    DEVICE=cpu
fi
# the model word of the GPU's name: "NVIDIA H100 80GB HBM3" -> h100, "NVIDIA H200" -> h200
GPU=""
if [[ $DEVICE == cuda ]]; then
    GPU=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0))" 2>/dev/null | tr ' ' '\n' |
        grep -E '^[A-Za-z]+[0-9]+' | head -1 | tr 'A-Z' 'a-z' | tr -cd 'a-z0-9-')
fi
[[ $DEVICE == cpu || -n $GPU ]] || GPU=gpu
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

if [[ -n "${GPU_CHECK_COMMIT:-}" ]]; then
    COMMIT="$GPU_CHECK_COMMIT (given)"
else
    COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "? (no git here: pass GPU_CHECK_COMMIT)")
    [[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]] || COMMIT="$COMMIT+dirty"
fi
{
    echo "# GPU check ($STAMP)"
    echo
    echo "Command: \`bash benchmarks/gpu_check.sh\`  "
    echo "Commit: $COMMIT; date $(date -u '+%Y-%m-%d %H:%M') UTC; device $DEVICE  "
    echo "Machine: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'no GPU')," \
        "$(nproc) CPU cores; $("$PYTHON" -c 'import platform, torch, lightning, onnxruntime as o; print(f"Python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), lightning {lightning.__version__}, onnxruntime {o.__version__} {o.get_available_providers()}")' 2>&1)"
    echo
} >"$RECORD/README.md"

run() {  # run NAME SECONDS CMD...: a step bounded by SECONDS and by what is left of BUDGET; output in NAME.log
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - ($(date +%s) - START)))
    if ((left < 30)); then
        step "$name: skipped, the ${BUDGET} s budget is spent"
        echo "| $name | \`$*\` | skipped (budget spent) | - | - |" >>"$RECORD/steps.md"
        return
    fi
    ((limit <= left)) || limit=$left
    step "$name (at most $limit s): $*"
    local t0=$(date +%s)
    timeout -k 10 "$limit" "$@" >"$RECORD/$name.log" 2>&1  # the whole process group, workers too
    local rc=$?
    local status=$([[ $rc == 0 ]] && echo ok || ([[ $rc == 124 ]] && echo "timed out after $limit s" || echo "exit $rc"))
    step "$name: $status in $(($(date +%s) - t0)) s"
    echo "| $name | \`$*\` | $status | $(($(date +%s) - t0)) s | [$name.log]($name.log) |" >>"$RECORD/steps.md"
}
: >"$RECORD/steps.md"

# 2. the cuda tests (2-3 minutes: a DDP start-up, an export, a few tiny fits, an inductor compile of a training step)
run tests 230 "$PYTHON" -m pytest tests/test_cuda.py -m cuda -p no:cacheprovider -rs -v -s
# 3. the GPU benchmarks, bf16 autocast, in process (--no-isolate; compiled cases still get their own process)
if [[ $DEVICE == cuda ]]; then
    BENCH=(--device cuda --precision bf16 --no-isolate --cache /tmp/gpu_check_cache)
    run inference 60 "$PYTHON" -m benchmarks.run "${BENCH[@]}" --only forward --variants w48,w48_ocr \
        --sizes 1024x2048 --paths eager,fast --out "$RECORD/inference"
    # the compiled case's first step compiles forward + loss and the backward (1-2 minutes for W48)
    run train 200 "$PYTHON" -m benchmarks.run "${BENCH[@]}" --only train --train-variants w48 --train-batch 8 \
        --train-size 512x1024 --train-paths hrseg_cl,compile_cl --out "$RECORD/train"
    # last, and only if the budget allows: the demo's 300 steps on the GPU (its scores in the record)
    run demo_fit 70 "$PYTHON" -m hrseg fit --config demo --trainer.accelerator gpu --trainer.devices 1 \
        --trainer.enable_progress_bar false --trainer.default_root_dir /tmp/gpu_check_demo
else
    run inference 120 "$PYTHON" -m benchmarks.run --quick --only forward --variants w18_small_v1,w18_small_v1_ocr \
        --paths eager,fast --out "$RECORD/inference"
    run train 200 "$PYTHON" -m benchmarks.run --quick --only train --train-paths hrseg,compile \
        --compile-backend aot_eager --out "$RECORD/train"
fi

{
    echo "| step | command | result | time | log |"
    echo "|---|---|---|---|---|"
    cat "$RECORD/steps.md"
    echo
    echo "Tests (from tests.log):"
    echo
    echo '```'
    [[ -f "$RECORD/tests.log" ]] && grep -E "PASSED|FAILED|SKIPPED|ERROR|max \|diff\||agreement|providers|compiled loss|passed|failed" "$RECORD/tests.log" | tail -40
    echo '```'
    [[ -f "$RECORD/demo_fit.log" ]] && { echo; echo "Demo fit: $(grep -E 'val/mIoU|mIoU' "$RECORD/demo_fit.log" | tail -2 | tr '\n' ' ')"; }
    for part in train inference; do  # the benchmark tables (raw numbers: $part/$part.json or forward.json)
        for md in "$RECORD/$part/train.md" "$RECORD/$part/forward.md"; do
            [[ -f "$md" ]] && { echo; sed -e '1s/^# /### /' "$md"; }
        done
    done
    echo
    echo "Total: $(($(date +%s) - START)) s."
} >>"$RECORD/README.md"
rm -f "$RECORD/steps.md"
step "record: $RECORD"
if [[ -n "${OUT:-}" ]]; then  # at most 8 files come back from $OUT: the summary and the record as one archive
    cp "$RECORD/README.md" "$OUT/README.md"
    tar -czf "$OUT/$(basename "$RECORD").tar.gz" -C "$(dirname "$RECORD")" "$(basename "$RECORD")"
fi
