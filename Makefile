# Every target creates the virtual environment it needs: `make demo` and `make test` work on a
# fresh machine with Python >= 3.10 and pip.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 is the CPU build this team's machines carry; any torch>=2.4 works.
TORCH ?= torch==2.13.0

.PHONY: venv demo reproduce test lint clean

$(BIN)/recalign: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $(BIN)/recalign

venv: $(BIN)/recalign

demo: venv
	$(BIN)/recalign demo $(ARGS)

# the paper-style report; e.g. make reproduce ARGS="--datasets sim,ml-100k --seeds 3 --jobs 2 --out DIR"
reproduce: venv
	$(BIN)/recalign reproduce $(ARGS)

test: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info
