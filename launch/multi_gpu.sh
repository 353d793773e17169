#!/usr/bin/env bash
# Single host, all local GPUs: jax.pmap splits each global batch (config field batch_size, the same on any
# number of GPUs) over them; it must divide by GPUs x grad_accum_steps. Install the CUDA build of JAX first:
#   pip install -U "jax[cuda12]"
# Usage: bash launch/multi_gpu.sh configs/scierc.py runs/scierc [extra --config.x=y ...]
set -euo pipefail
CONFIG=${1:?config file, e.g. configs/scierc.py}; OUT=${2:?output folder}; shift 2
source "$(dirname "$0")/gpu_env.sh"   # XLA flags shared with slurm.sbatch; the auto compute dtype is bf16 on GPUs
bash "$(dirname "$0")/ner_re.sh" "$CONFIG" "$OUT" "$@"
