#!/usr/bin/env bash
# The fine-tuning defaults' table in README.md: both invented names (examples/three_kingdoms.json,
# tests/data/song_painter.json), 10 epochs each, seeds 0-2, with the top-3 completions after and the
# held-out masked-token accuracy (tests/data/zh_heldout.txt, the same masks every time).
#
#   LR=1.2e-4 bash bench/finetune_defaults.sh models/zh-small /tmp/ft   # LR unset: train.py's default
set -u
cd "$(dirname "$0")/.."
M=${1:?usage: bench/finetune_defaults.sh MODEL_DIR OUT_DIR}
O=${2:?usage: bench/finetune_defaults.sh MODEL_DIR OUT_DIR}
PY=${PY:-.venv/bin/python}
H=tests/data/zh_heldout.txt
acc() { "$PY" predict.py --model "$1" --eval $H --json 2>/dev/null | head -1 | "$PY" -c "import sys,json; print(round(json.load(sys.stdin)['accuracy']*100,2))"; }
top() { "$PY" predict.py --model "$1" --json "$2" 2>/dev/null | "$PY" -c "import sys,json; c=json.load(sys.stdin)['masks'][0]['candidates'][:3]; print(' '.join(f\"{x['token']} {x['score']:.3f}\" for x in c))"; }
base=$(acc $M); echo "base heldout $base"
echo "before: $(top $M 三国人物诸葛[MASK]) | $(top $M 北宋画家欧阳[MASK])"
for s in 0 1 2; do
  "$PY" train.py --model $M --train examples/three_kingdoms.json --epochs 10 --seed $s ${LR:+--lr $LR} --output $O/tk$s --overwrite --no-progress > /dev/null 2>&1
  echo "three_kingdoms seed $s: $(top $O/tk$s 三国人物诸葛[MASK]) heldout $(acc $O/tk$s)"
  "$PY" train.py --model $M --train tests/data/song_painter.json --epochs 10 --seed $s ${LR:+--lr $LR} --output $O/sp$s --overwrite --no-progress > /dev/null 2>&1
  echo "song_painter seed $s: $(top $O/sp$s 北宋画家欧阳[MASK]) heldout $(acc $O/sp$s)"
done
