# Two entry points for a fresh machine: `make demo` (train HRNetV2 on generated scenes) and `make test`.
# Each creates .venv on first use and installs what it needs (again whenever pyproject.toml changes):
# `make demo` the runtime dependencies only (`pip install -e .`), `make test` adds the `dev` extra (pytest,
# the pinned linters, the optional integrations the tests cover).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.hrseg-runtime
STAMP := $(VENV)/.hrseg-installed
export NO_ALBUMENTATIONS_UPDATE := 1

# torch/torchvision pair that installs from this machine kind's local wheels and imports cleanly together.
ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: demo test lint install notebooks bench clean-venv

$(RUNTIME_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check $(TORCH_PINS)
	$(BIN)/pip install --disable-pip-version-check -e . $(TORCH_PINS)
	touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP)
	$(BIN)/pip install --disable-pip-version-check -e ".[dev]" $(TORCH_PINS)
	touch $(STAMP)

install: $(STAMP)

demo: $(RUNTIME_STAMP)
	$(BIN)/hrseg fit --config demo

# lint (ruff rules incl. Google-style docstrings, formatting, mypy on hrseg/) gates the test run.
test: $(STAMP) lint
	# no reruns: the xdist worker crashes of 2026-11-27 were a segfault under PyTorch's DataLoader SIGCHLD handler,
	# which hrseg's loaders now remove after iterating (hrseg/data/worker_signals.py); a crash fails the run
	$(BIN)/python -m pytest -n 2 -m "not slow or slow" --ignore=tests/test_benchmarks.py
	# the benchmark suite times itself and starts its own processes: run it alone, nothing competing for the cores
	$(BIN)/python -m pytest -m "not slow or slow" tests/test_benchmarks.py

lint: $(STAMP)
	$(BIN)/ruff check hrseg tests benchmarks
	$(BIN)/ruff format --check hrseg tests benchmarks
	$(BIN)/mypy hrseg

# the example notebooks, executed with small settings so their figures show on a repository page
notebooks: $(STAMP)
	$(BIN)/python notebooks/make_notebooks.py --execute

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean-venv:
	rm -rf $(VENV)
