#!/usr/bin/env bash
# Single host, all local GPUs: jax.pmap splits each global batch (config field batch_size, the same on any
# number of GPUs) over them; it must divide by GPUs x grad_accum_steps. Install the CUDA build of JAX first:
#   pip install -U "jax[cuda12]"
# Usage: bash launch/multi_gpu.sh configs/scierc.py runs/scierc [extra --config.x=y ...]
set -euo pipefail
CONFIG=${1:?config file, e.g. configs/scierc.py}; OUT=${2:?output folder}; shift 2
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # let NER and RE runs share a card with other jobs
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
bash "$(dirname "$0")/ner_re.sh" "$CONFIG" "$OUT" --config.model.dtype=bfloat16 "$@"
