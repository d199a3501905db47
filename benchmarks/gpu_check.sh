#!/usr/bin/env bash
# The GPU check, in one command (under 8 minutes on one GPU; every step time-boxed): the CUDA tests (CPU-vs-CUDA
# equivalence of experts, distillation and evaluation for MTT, FTD, ATT, AST, APM; no host waits outside
# runtime.host_read), one MTT iteration at three paper sizes (CIFAR-10, Tiny ImageNet with recompute, 128 px) with
# TF32 off/on, peak memory and the memory model's estimate, expert training one after another vs batched, evaluation
# epochs/s, and a profile of where an iteration's GPU time goes (with CUDA-graph replays of the same work).
#
#   bash benchmarks/gpu_check.sh OUT [--cpu] [--quick] [--python PYTHON]
#
# On a machine with a GPU, from the repository root (with the device tool: run `bash benchmarks/gpu_check.sh $OUT`,
# carrying `.whl` only where that machine's Python lacks pytest):
#   bash benchmarks/gpu_check.sh $OUT
# Rehearsal on the CPU, tiny sizes (tests/test_gpu_check.py runs it):
#   bash benchmarks/gpu_check.sh /tmp/gpu-check --cpu --quick
# Wheels of pytest and its four dependencies for a machine without it (run here, where PyPI is reachable):
#   bash benchmarks/gpu_check.sh --fetch-wheels
#
# Needs only a Python with torch (and NumPy, PyYAML, Pillow, scikit-learn and tqdm, which the library imports).
# Not kornia: only ZCA fitting imports it, and no step fits ZCA. Not Snakemake: no step runs the workflow. The CPU
# rehearsal hides both, so a step that starts needing them fails here first. OUT receives gpu-check_<device>.json
# (every step with its status, seconds and results, and a summary), steps.jsonl (the same, a line per finished step,
# written as the check goes), check.log (every step's output) and tests.xml (pytest's report).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WHEELS=(pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 packaging==25.0 pygments==2.21.0)

if [ "${1:-}" = "--fetch-wheels" ]; then
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}"
fi
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: bash benchmarks/gpu_check.sh OUT [--cpu] [--quick] [--python PYTHON] | --fetch-wheels" >&2
    exit 2
fi
mkdir -p "$1" && OUT=$(cd "$1" && pwd)
shift
DEV=cuda QUICK=0 PY=python3
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) DEV=cpu ;;
        --quick) QUICK=1 ;;
        --python) PY=$2; shift ;;
        *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
rm -f "$OUT/steps.jsonl" "$OUT/check.log" "$OUT/tests.xml" "$OUT/gpu-check_$DEV.json"
export PYTHONPATH="$ROOT/src" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if [ "$DEV" = cpu ]; then  # as on the GPU machine: no kornia, no snakemake
    for missing in kornia snakemake; do
        mkdir -p "$WORK/hide/$missing"
        echo "raise ImportError('$missing is not on the GPU machine (hidden by gpu_check.sh --cpu)')" \
            > "$WORK/hide/$missing/__init__.py"
    done
    PYTHONPATH="$WORK/hide:$PYTHONPATH"
fi
if ! "$PY" -c "import pytest" 2>/dev/null; then  # pytest from the carried wheels (--fetch-wheels)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" .whl/*.whl \
        && PYTHONPATH="$PYTHONPATH:$WORK/site"
fi

step() {  # step NAME LIMIT PAYLOAD COMMAND...: run COMMAND for at most LIMIT seconds, then record it
    local name=$1 limit=$2 payload=$3
    shift 3
    echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/check.log" >&2
    local start rc
    start=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.log" 2>&1
    rc=$?
    cat "$WORK/$name.log" >> "$OUT/check.log"
    "$PY" benchmarks/gpu_collect.py step "$OUT" "$name" "$rc" "$start" "$(date +%s.%N)" "$limit" "$payload" \
        "$WORK/$name.log" -- "$@"
}

TESTS=$(grep -l "pytest.mark.cuda" tests/test_*.py)
BENCH=(--device "$DEV" --out "$WORK" --no-rss)
if [ "$QUICK" = 1 ]; then  # tiny stand-ins of the same cases, to rehearse every line
    CIFAR=(--shape digits --ipc 1 --syn-steps 2 --batch-syn all --model ConvNetD2W16 --memory full)
    TINY=(--shape digits --ipc 2 --syn-steps 2 --batch-syn 10 --model ConvNetD2W16 --memory recompute)
    PX128=(--shape digits --ipc 1 --syn-steps 3 --batch-syn all --model ConvNetD2W16 --memory full)
    TIMES=(--repeat 1 --warmup 0)
    EXPERTS=(--shape digits --images 128 --batch 64 --experts 1 2 --model ConvNetD2W16)
    EVALUATE=(--shape digits --ipc 1 --epochs 2 --arch ConvNetD2W16)
    PROFILE=(--shape digits --ipc 1 --syn-steps 2 --model ConvNetD2W16 --expert-batch 32 --expert-steps 2 --batched 2
             --calls 1 --repeat 1)
else  # the papers' sizes: CIFAR-10 IPC 10 N 30 full batch; Tiny IPC 10 N 20 batch 200 recompute; 128 px IPC 1 N 20
    CIFAR=(--shape cifar10 --ipc 10 --syn-steps 30 --batch-syn all --model ConvNet --memory full)
    TINY=(--shape tiny-imagenet --ipc 10 --syn-steps 20 --batch-syn 200 --model ConvNetD4 --memory recompute)
    PX128=(--shape imagenette --ipc 1 --syn-steps 20 --batch-syn all --model ConvNetD5 --memory full)
    TIMES=(--repeat 5 --warmup 2)
    EXPERTS=(--shape cifar10 --images 12800 --batch 256 --experts 1 4 8 16 --model ConvNet)
    EVALUATE=(--shape cifar10 --ipc 1 10 50 --epochs 20 --arch ConvNet)
    PROFILE=(--shape cifar10 --ipc 10 --syn-steps 30 --model ConvNet --expert-batch 256 --expert-steps 20 --batched 8)
fi

step env 20 "$WORK/env.json" "$PY" benchmarks/gpu_collect.py env "$WORK/env.json" "$DEV"
step tests 120 "$OUT/tests.xml" env DISTILLERY_TEST_DEVICE="$DEV" OMP_NUM_THREADS=1 "$PY" -m pytest -q -m cuda \
    -p no:cacheprovider --junitxml="$OUT/tests.xml" $TESTS
step distill_cifar10 40 "$WORK/distill_cifar10_$DEV.json" "$PY" benchmarks/distill.py "${BENCH[@]}" "${CIFAR[@]}" \
    "${TIMES[@]}" --compare tf32=true --name distill_cifar10
step distill_tiny 50 "$WORK/distill_tiny_$DEV.json" "$PY" benchmarks/distill.py "${BENCH[@]}" "${TINY[@]}" \
    "${TIMES[@]}" --compare tf32=true --name distill_tiny
step distill_128 40 "$WORK/distill_128_$DEV.json" "$PY" benchmarks/distill.py "${BENCH[@]}" "${PX128[@]}" \
    "${TIMES[@]}" --compare tf32=true --name distill_128
step experts 70 "$WORK/experts_$DEV.json" "$PY" benchmarks/experts.py "${BENCH[@]}" "${EXPERTS[@]}" "${TIMES[@]}" \
    --tf32 false true --compare mode=batched
step evaluate 40 "$WORK/evaluate_$DEV.json" "$PY" benchmarks/evaluate.py "${BENCH[@]}" "${EVALUATE[@]}" \
    "${TIMES[@]}" --compare tf32=true
step profile 60 "$WORK/profile.json" "$PY" benchmarks/gpu_profile.py --device "$DEV" --out "$WORK/profile.json" \
    "${PROFILE[@]}"
"$PY" benchmarks/gpu_collect.py finish "$OUT" "$DEV"
