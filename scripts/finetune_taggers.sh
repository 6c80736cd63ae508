#!/usr/bin/env bash
# Reproduce models/zh-small-ner and models/zh-small-cws: fine-tune models/zh-small on People's Daily
# (January 1998, from `make data`), keep the epoch with the best dev F1 (best/), export it in fp16 and
# score it on the held-out test split.
#
#   bash scripts/finetune_taggers.sh                 # or: make taggers
#   EPOCHS=1 OUT=/tmp/tag bash scripts/finetune_taggers.sh   # a short trial
#   CRF=0 bash scripts/finetune_taggers.sh          # softmax taggers, without the CRF layer
#
# The two runs go side by side with one thread each: on a 2-core machine a run that uses both cores
# slows several-fold whenever anything else runs, one thread per run does not (BENCHMARKS.md,
# "Tagging"). Each run checkpoints every 500 steps; rerunning the script resumes an interrupted run
# and skips a finished one.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs}                     # the run folders go here: $OUT/ner, $OUT/cws
EPOCHS=${EPOCHS:-14}             # dev F1 still rose at 8 (BENCHMARKS.md, "Tagging")
LR=${LR:-5e-4}
THREADS=${THREADS:-1}                # torch threads per run
CRF=${CRF:-1}                        # 1: a CRF layer over the tags (--crf; dev F1 higher, BENCHMARKS.md); 0: softmax
EXTRA=${EXTRA:-}                     # more train.py flags for both runs, e.g. "--device cuda"

# shellcheck source=run_lib.sh
. scripts/run_lib.sh
make_data data/zh/ner_train.jsonl

tag() {  # tag NAME [train.py flags]: one fine-tune into $OUT/NAME, unless it finished already
  local name=$1 dir="$OUT/$1"
  shift
  if finished "$dir"; then echo "== $name: done already ($dir)"; return; fi
  echo "== $name: $dir (log: $dir.log)"
  # shellcheck disable=SC2086,SC2046
  OMP_NUM_THREADS=$THREADS "$PY" train.py --task tag --model models/zh-small \
    --train "data/zh/${name}_train.jsonl" --eval "data/zh/${name}_dev.jsonl" --eval-every epoch \
    --epochs "$EPOCHS" --lr "$LR" --save-every 500 --output "$dir" --no-progress \
    $(resume_flag "$dir") $([ "$CRF" = 1 ] && echo --crf) "$@" $EXTRA > "$dir.log" 2>&1
}

mkdir -p "$OUT"
tag ner & ner=$!
tag cws --tag-scheme BMES & cws=$!
wait $ner $cws

for name in ner cws; do  # best/ (the best dev F1) in fp16, as models/zh-small is shipped
  export_fp16 BertForTokenClassification "$OUT/$name/best" "models/zh-small-$name"
  "$PY" predict.py --model "models/zh-small-$name" --eval "data/zh/${name}_test.jsonl"
done
