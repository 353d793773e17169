#!/usr/bin/env bash
# All of CoNLL04 on a CPU with the packaged encoder (configs/conll04_cpu.py): NER, then end-to-end RE.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install.sh
export MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776
bash launch/ner_re.sh configs/conll04_cpu.py "${1:-runs/conll04_cpu}"
