#!/usr/bin/env bash
# The main job on a CPU: install, train NER on a slice of CoNLL04 with the packaged encoder, train RE,
# then score RE end to end on the NER run's predicted entities. Prints NER / RE / RE+ F1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install.sh
# glibc would hand XLA's per-step activation buffers back to the OS and page-fault them in again on every
# step (a quarter of a training step's CPU time in lai_jax.bench); keep freed memory in one heap instead.
export MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776
OUT=${1:-runs/quick}
python3 -m lai_jax.main --config=configs/quick.py:ner --workdir="$OUT/ner"
python3 -m lai_jax.main --config=configs/quick.py:re --workdir="$OUT/re" --config.re.entities_from="$OUT/ner"
python3 - "$OUT" <<'PY'
import json, sys
ner = json.load(open(f"{sys.argv[1]}/ner/results.json"))["test"]
re_ = json.load(open(f"{sys.argv[1]}/re/results.json"))["test"]
print("\nCoNLL04 (quick slice) test, end to end, micro F1 (%):")
print(f"  NER {100 * ner['ner']['micro']['f1']:.2f}   RE {100 * re_['re']['micro']['f1']:.2f}   RE+ {100 * re_['re+']['micro']['f1']:.2f}")
PY
