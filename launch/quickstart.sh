#!/usr/bin/env bash
# The main job on a CPU: install, train NER on a slice of CoNLL04 with the packaged encoder, train RE,
# then score RE end to end on the NER run's predicted entities. Prints NER / RE / RE+ F1 on dev and test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install.sh
# glibc would hand XLA's per-step activation buffers back to the OS and page-fault them in again on every
# step (a quarter of a training step's CPU time in benchmarks.step); keep freed memory in one heap instead.
export MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776
bash launch/ner_re.sh configs/quick.py "${1:-runs/quick}"
