#!/usr/bin/env bash
# One prepared check for a machine with a CUDA GPU (about 5 minutes on one H100):
#   1. the CUDA-only tests (tests/test_cuda.py),
#   2. the recorder overhead at ResNet-50 MoCo size (batch 256, K 65536, bf16),
#   3. the trainer throughput rows (CIFAR demo and ImageNet-100 sizes),
# every table written to one markdown file.
#
#   bash benchmarks/gpu_check.sh                          # CUDA; writes runs/gpu_check.md
#   bash benchmarks/gpu_check.sh --out "$OUT/gpu_check.md"
#   bash benchmarks/gpu_check.sh --device cpu             # the same steps at tiny sizes (CI runs this)
#
# Works from a plain copy of the repository: scoreviz is imported from it (PYTHONPATH), not
# installed. It needs a Python with torch (a CUDA build for --device cuda; torch is never
# installed or replaced here), numpy, h5py, pandas, tqdm, tensorboard and pytest. Missing
# ones are installed with pip from the wheels in .whl/ of the repository (or $SCOREVIZ_WHEELS)
# when that folder exists, with no network; otherwise from the package index; a constraint
# pins the installed torch, so pip can never swap it. Exit status: 0 when every step passed.
set -uo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
DEVICE=cuda
OUT_FILE=runs/gpu_check.md
PY=${PYTHON:-python3}
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=${2:?--device needs cuda or cpu}; shift 2 ;;
        --out) OUT_FILE=${2:?--out needs a file}; shift 2 ;;
        --python) PY=${2:?--python needs an interpreter}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check.sh: --device must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
fail() { echo "gpu_check.sh: $*" >&2; exit 1; }

# ---------------------------------------------------------------- the Python environment
command -v "$PY" > /dev/null || fail "no Python interpreter '$PY' (give one with --python or PYTHON=)"
"$PY" -c "import torch" 2> /dev/null || fail "$PY has no torch: install a torch build first (this script never installs torch)"
if [ "$DEVICE" = cuda ]; then
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        || fail "torch in $PY sees no CUDA device (torch $("$PY" -c 'import torch; print(torch.__version__)')); use --device cpu for the tiny run"
fi
MISSING=$("$PY" - <<'EOF'
import importlib.util
needed = {"numpy": "numpy", "h5py": "h5py", "pandas": "pandas", "tqdm": "tqdm", "tensorboard": "tensorboard",
          "pytest": "pytest", "pytest_timeout": "pytest-timeout"}
print(" ".join(pip for module, pip in needed.items() if importlib.util.find_spec(module) is None))
EOF
)
if [ -n "$MISSING" ]; then
    CONSTRAINT=$(mktemp)
    trap 'rm -f "$CONSTRAINT"' EXIT
    "$PY" -c "import torch; print('torch==' + torch.__version__)" 2> /dev/null > "$CONSTRAINT"
    WHEELS=${SCOREVIZ_WHEELS:-$ROOT/.whl}
    if [ -d "$WHEELS" ]; then
        SOURCE=(--no-index --find-links "$WHEELS")
        echo "gpu_check.sh: installing $MISSING from $WHEELS"
    else
        SOURCE=()
        echo "gpu_check.sh: installing $MISSING from the package index (no $WHEELS folder)"
    fi
    # shellcheck disable=SC2086  # MISSING is a list of names
    "$PY" -m pip install -q --constraint "$CONSTRAINT" "${SOURCE[@]}" $MISSING \
        || fail "could not install $MISSING; without a network, carry their wheels in .whl/ (pip download ... -d .whl)"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# ---------------------------------------------------------------- sizes
if [ "$DEVICE" = cuda ]; then
    RECORDER_ARGS=(--device cuda --arch resnet50 --batch 256 --queue 65536 --image-size 224 --settings 1 2
                   --rounds 3 --steps 10 --bare-calls 5)
    THROUGHPUT_ARGS=(--device cuda --configs cifar imagenet --steps 10 --rounds 3)
else
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # a smoke run: one thread each, no fight over a shared CPU
    RECORDER_ARGS=(--device cpu --arch small --batch 16 --queue 64 --image-size 8 --settings 1 --rounds 2 --steps 2)
    THROUGHPUT_ARGS=(--device cpu --configs tiny --steps 2 --rounds 2)
fi

# ---------------------------------------------------------------- the checks
mkdir -p "$(dirname "$OUT_FILE")"
LOG=$(mktemp)
STATUS=0
START=$SECONDS
{
    echo "# scoreviz GPU check ($DEVICE)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit: $(git rev-parse --short HEAD 2> /dev/null || echo unknown)"
    "$PY" -c "
import platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'
print(f'- Python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, GPU: {gpu}')"
    echo "- command: bash benchmarks/gpu_check.sh --device $DEVICE"
} > "$OUT_FILE"

section() {  # section TITLE COMMAND...: run it, show its output, put it in the file
    local title=$1; shift
    local t0=$SECONDS
    echo "== $title: $*"
    "$@" 2>&1 | tee "$LOG"
    local rc=${PIPESTATUS[0]}
    {
        echo
        echo "## $title"
        echo
        echo "\`$*\` (exit $rc, $((SECONDS - t0)) s)"
        echo
        if [ "$title" = "CUDA-only tests" ]; then
            echo '```'
            grep -E "passed|failed|skipped|error|SKIPPED|FAILED|ERROR" "$LOG" | tail -n 30
            echo '```'
        else
            sed 's/^\([0-9]\)\. /### \1. /' "$LOG"
        fi
    } >> "$OUT_FILE"
    [ "$rc" -eq 0 ] || STATUS=1
}

section "CUDA-only tests" "$PY" -m pytest tests/test_cuda.py -q -rs -p no:cacheprovider
section "Recorder overhead" "$PY" benchmarks/recorder_overhead.py "${RECORDER_ARGS[@]}"
section "Trainer throughput" "$PY" benchmarks/trainer_throughput.py "${THROUGHPUT_ARGS[@]}"
rm -f "$LOG"

echo >> "$OUT_FILE"
echo "Total: $((SECONDS - START)) s; $( [ $STATUS -eq 0 ] && echo 'every step passed' || echo 'a step FAILED')." >> "$OUT_FILE"
echo "gpu_check.sh: wrote $OUT_FILE in $((SECONDS - START)) s ($( [ $STATUS -eq 0 ] && echo ok || echo 'a step failed'))"
exit $STATUS
