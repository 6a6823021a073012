# Two commands on a fresh machine: `make demo` and `make test`.
# Torch is installed first, pinned, with pip: the CPU build lies on disk here, and a
# resolver left alone would fetch a multi-GB CUDA build. A GPU machine installs its own torch.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin

.PHONY: venv demo test bench clean-venv

$(BIN)/scaling: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

venv: $(BIN)/scaling

demo: venv
	$(BIN)/python -m scaling.demo

# The layers point down and no modules import each other in a circle (pyproject.toml's
# import-linter contracts, drawn in docs/architecture.md), then the tests; the 25 slowest are
# listed at the end, to keep the suite inside CI's time.
test: venv
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q --durations=25 tests

bench: venv
	$(BIN)/python bench/run_all.py

clean-venv:
	rm -rf $(VENV)
