#!/usr/bin/env bash
# The NER -> RE chain for one config: train NER, train RE on the NER run's predicted entities (end to end),
# then print NER / RE / RE+ on dev and test. Extra arguments go to both phases; one prefixed `ner:` or `re:`
# goes to that phase alone. A phase whose workdir already has results.json is skipped (rerun the same command
# after a crash: a finished phase is kept, an unfinished one resumes from its last checkpoint).
#   bash launch/ner_re.sh configs/conll04_cpu.py runs/conll04_cpu [--config.seed=1 ...]
#   bash launch/ner_re.sh configs/quick.py runs/q --config.num_epochs=10 re:--config.optim.learning_rate=3e-3
# Set LAUNCH="srun" (SLURM) or similar to wrap each phase's python command; PYTHON picks the interpreter.
set -euo pipefail
CONFIG=${1:?config file, e.g. configs/conll04.py}; OUT=${2:?output folder}; shift 2
PYTHON=${PYTHON:-python3}
for PHASE in ner re; do
  if [ -f "$OUT/$PHASE/results.json" ]; then
    echo "ner_re.sh: $OUT/$PHASE/results.json exists, skipping the $PHASE phase" >&2
    continue
  fi
  EXTRA=()
  [ "$PHASE" = re ] && EXTRA=(--config.re.entities_from="$OUT/ner")
  for ARG in "$@"; do
    case "$ARG" in
      ner:*|re:*) [ "${ARG%%:*}" = "$PHASE" ] && EXTRA+=("${ARG#*:}") ;;
      *) EXTRA+=("$ARG") ;;
    esac
  done
  ${LAUNCH:-} "$PYTHON" -m lai_jax.main --config="$CONFIG:$PHASE" --workdir="$OUT/$PHASE" "${EXTRA[@]}"
done
"$PYTHON" -m lai_jax.summary "$OUT"
