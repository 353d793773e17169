#!/usr/bin/env bash
# The GPU check in one call (README "GPU check and run planning"): installs what the image lacks from .whl/
# (launch/gpu_image.txt, "wheel" rows; downloaded by launch/gpu_wheels.sh), then runs python -m
# benchmarks.gpu_check, which prints ONE JSON line on stdout (progress on stderr). Arguments go to it:
#   bash benchmarks/gpu_check.sh                       # on the GPU machine, at most 5 minutes
#   bash benchmarks/gpu_check.sh --smoke               # on a CPU: tiny encoder and shapes, 2 steps
#   bash benchmarks/gpu_check.sh --out "$OUT/gpu.json" # also keep the JSON in a file, written after every part
# PYTHON (default python3) picks the interpreter; GPU_CHECK_TIMEOUT_S (default 290) is the hard limit of the
# Python part, whose own watchdog prints what was measured at --budget-s (default 270).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
missing=()
while read -r kind req module _; do
  [[ "$kind" == wheel ]] || continue
  $PY -c "import $module" 2>/dev/null || missing+=("$req")
done < launch/gpu_image.txt
if (( ${#missing[@]} )); then
  if [[ ! -d .whl ]]; then
    echo "error: ${missing[*]} not installed and no .whl/ folder: run bash launch/gpu_wheels.sh where PyPI is reachable" >&2
    exit 2
  fi
  echo "gpu_check: installing ${missing[*]} from .whl/" >&2
  $PY -m pip install -q --no-index --find-links .whl --no-deps "${missing[@]}" >&2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout -k 10 "${GPU_CHECK_TIMEOUT_S:-290}" $PY -m benchmarks.gpu_check "$@"
