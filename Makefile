# lungseg — the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

CARGO_TARGET_DIR ?= $(HOME)/.cache/lungseg-target
export CARGO_TARGET_DIR
CARGO ?= cargo
FEATURES ?= $(if $(shell command -v nvcc 2>/dev/null),cuda,)
FEATURE_FLAGS := $(if $(strip $(FEATURES)),--features $(FEATURES),)
BIN := $(CARGO_TARGET_DIR)/debug/lungseg

# Inputs and outputs. Without LIDC_ROOT the synthetic tree is generated under demo/.
LIDC_ROOT ?=
SYNTH_ROOT ?= demo/lidc-synth
SYNTH_PATIENTS ?= 40
DATA ?= demo/data
RUN ?= demo/runs/demo
DEVICE ?= auto
INPUT := $(if $(LIDC_ROOT),$(LIDC_ROOT),$(SYNTH_ROOT))

.PHONY: all build demo synth prepare split train eval report test lint bench python-deps clean

all: build

build:
	$(CARGO) build --bin lungseg

## The whole chain on the synthetic default (or LIDC_ROOT=...), on CPU.
demo: build
	@if [ -z "$(LIDC_ROOT)" ]; then $(MAKE) --no-print-directory synth; fi
	$(MAKE) --no-print-directory prepare split
	$(MAKE) --no-print-directory train eval report

synth: build
	$(BIN) synth --out $(SYNTH_ROOT) --patients $(SYNTH_PATIENTS) --seed 7

prepare: build
	$(BIN) prepare --input $(INPUT) --out $(DATA)

split: build
	$(BIN) split --data $(DATA)

train:
	@echo "train: not built yet" >&2; exit 1

eval:
	@echo "eval: not built yet" >&2; exit 1

report:
	@echo "report: not built yet" >&2; exit 1

## Python readers used by the interoperability tests (polars, pyarrow, numpy).
python-deps:
	@bash scripts/ensure-python-deps.sh

test: python-deps
	$(CARGO) test --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

bench: python-deps
	bash scripts/bench.sh

clean:
	rm -rf demo
