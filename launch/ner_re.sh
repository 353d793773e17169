#!/usr/bin/env bash
# The NER -> RE chain for one config: train NER, train RE on the NER run's predicted entities (end to end),
# then print NER / RE / RE+ on dev and test. Extra arguments go to both phases.
#   bash launch/ner_re.sh configs/conll04_cpu.py runs/conll04_cpu [--config.seed=1 ...]
# Set LAUNCH="srun" (SLURM) or similar to wrap each phase's python command.
set -euo pipefail
CONFIG=${1:?config file, e.g. configs/conll04.py}; OUT=${2:?output folder}; shift 2
${LAUNCH:-} python3 -m lai_jax.main --config="$CONFIG:ner" --workdir="$OUT/ner" "$@"
${LAUNCH:-} python3 -m lai_jax.main --config="$CONFIG:re" --workdir="$OUT/re" --config.re.entities_from="$OUT/ner" "$@"
python3 -m lai_jax.summary "$OUT"
