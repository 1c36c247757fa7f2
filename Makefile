# Set-up and the two entry points of the README. `make demo` and `make test` set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q
STAMP := $(VENV)/.installed
POSE_STAMP := $(VENV)/.pose-installed

.PHONY: setup pose demo test bench clean

setup: $(STAMP) $(POSE_STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade "pip>=23"
	$(PIP) torch==2.14.1 torchvision==0.29.1
	$(PIP) -e ".[test,torchreid,fastreid]"
	$(PIP) --no-deps fastreid==1.4.0  # It pins torch 1.13; reid_augment.integrations.fastreid shims the rest.
	touch $(STAMP)

# The pose stack, pinned to versions tested together (a plain `pip install mmpose` does not resolve):
# mmcv-lite is pure Python (reid_augment.estimate stands in for its missing compiled ops); xtcocotools is
# built from source against numpy 2; mmpose's declared deps include chumpy, which is broken and unused;
# mediapipe 0.10.21 is the last wheel that bundles its pose model, and runs with numpy 2 despite its pins.
pose: $(POSE_STAMP)

$(POSE_STAMP): $(STAMP)
	$(PIP) "setuptools<81" cython
	$(PIP) mmengine==0.10.7 mmcv-lite==2.1.0 mmdet==3.3.0
	$(PIP) --no-binary xtcocotools --no-build-isolation xtcocotools==1.14.3
	$(PIP) --no-deps mmpose==1.3.2
	$(PIP) json-tricks munkres scipy matplotlib opencv-python-headless
	$(PIP) --no-deps mediapipe==0.10.21
	$(PIP) absl-py attrs flatbuffers "protobuf<5"
	touch $(POSE_STAMP)

demo: setup
	$(BIN)/reid-augment demo -o reid-augment-demo

test: setup
	$(BIN)/python -m pytest -q -rs tests

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) reid-augment-demo reid-augment-work
