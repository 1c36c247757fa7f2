# Set-up and the two entry points of the README. `make demo` and `make test` set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=23"
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[test,torchreid]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/reid-augment build-pairs reid_augment/sample/cuhk03 --poses reid_augment/sample/cuhk03/annotations.csv --test-ids 2 -o reid-augment-demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) reid-augment-demo reid-augment-work
