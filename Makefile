# Every target creates the virtual environment it needs: `make demo` and `make test` work on a
# fresh machine with Python >= 3.10 and pip.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# Installs are pinned. LOCK lists the exact version of every package the test suite runs with
# (recalign's dependencies, the `test` extra and everything they pull in), and every target that
# installs does so with `pip install -c $(LOCK)`. `make lock` regenerates it from pyproject.toml's
# ranges; `make test LOCK=` (empty) installs from the ranges alone, unpinned (whatever pip resolves
# that day). The lock is made with one Python (its `# python:` line); on another Python a pin may
# not exist (numpy 2.4 needs >= 3.11): the venv rule warns, and `make lock` or LOCK= is the way out.
LOCK ?= requirements/lock.txt
# The torch requirement. Default: the lock's own pin (torch==2.13.0: pip takes the CPU build
# 2.13.0+cpu where the machine offers it, as this team's machines do), or torch==2.13.0 with LOCK=.
# Any other, e.g. `make demo TORCH='torch>=2.4'` (every torch >= 2.4 works), replaces only the lock's
# torch line: the other packages stay pinned; should a pin not suit that torch, pip says so and
# LOCK= drops the pins. (A range lets pip take the newest torch its indexes offer: from PyPI on
# Linux, a CUDA build of several GB.) `make lock TORCH=...` locks another torch (the default
# then follows the lock).
TORCH ?= $(or $(shell sed -n 's/^torch==/&/p' $(LOCK) 2>/dev/null),torch==2.13.0)

# The venv is rebuilt from scratch (`venv --clear`) when pyproject.toml or the lock change, or
# when TORCH or LOCK name something else than it was built from (kept in $(SPEC)).
SPEC := $(VENV)/recalign-install-spec
SPEC_TEXT := torch: $(TORCH); lock: $(or $(LOCK),none)

.PHONY: venv demo reproduce test lint lock clean FORCE

$(BIN)/recalign: pyproject.toml $(LOCK) $(SPEC)
	@v=$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	l=$$($(if $(LOCK),sed -n 's/^# python: //p' $(LOCK))); \
	[ -z "$$l" ] || [ "$$v" = "$$l" ] || echo "warning: $(LOCK) was made with Python $$l," \
	"$(PY) is $$v: if pip finds no release for a pin, run 'make lock' or pass LOCK=" >&2
	$(PY) -m venv --clear $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(if $(LOCK),grep -v '^torch==' $(LOCK) > $(VENV)/constraints.txt)
	$(BIN)/pip install -q $(if $(LOCK),-c $(VENV)/constraints.txt) "$(TORCH)" -e ".[test]"
	echo '$(SPEC_TEXT)' > $(SPEC)
	touch $(BIN)/recalign

# Rewritten only when its text changes, so an unchanged spec does not trigger a rebuild.
$(SPEC): FORCE
	@mkdir -p $(VENV)
	@echo '$(SPEC_TEXT)' | cmp -s - $@ || echo '$(SPEC_TEXT)' > $@

$(LOCK):
	@echo "$(LOCK) is missing: 'make lock' writes it; LOCK= installs unpinned" >&2; exit 1

FORCE:

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

# Regenerate $(LOCK): install $(TORCH) and recalign[test] into a throw-away venv, resolved afresh
# from pyproject.toml's ranges (the current lock plays no part), and write down what got installed
# (recalign itself, pip and setuptools left out; local version labels such as +cpu dropped, so the
# pins hold on machines that offer another build). Then run `make test` and commit the lock.
lock:
	@[ -n "$(LOCK)" ] || { echo "make lock needs LOCK=FILE" >&2; exit 1; }
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PY) -m venv $$tmp/venv && \
	$$tmp/venv/bin/pip install -q --upgrade pip && \
	$$tmp/venv/bin/pip install -q "$(TORCH)" -e ".[test]" && \
	{ echo "# The exact versions recalign's test suite runs with: every make target that installs uses"; \
	  echo "# this file as pip constraints (pip install -c). Do not edit by hand: 'make lock' writes it,"; \
	  echo "# resolving pyproject.toml's ranges and $(TORCH) in a fresh venv:"; \
	  echo "#   pip install '$(TORCH)' -e '.[test]' && pip freeze --exclude recalign"; \
	  echo "# (local version labels such as +cpu dropped). Made $$(date -u +%Y-%m-%d) on" \
	       "$$($$tmp/venv/bin/python -c 'import platform as p; print(p.system(), p.machine())')" \
	       "with $$($$tmp/venv/bin/pip --version | cut -d' ' -f1-2)."; \
	  echo "# python: $$($$tmp/venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"; \
	  $$tmp/venv/bin/pip freeze --exclude recalign | sed -E 's/^([^ =]+==[^+]+)\+.*$$/\1/'; \
	} > $$tmp/lock.txt && \
	mkdir -p $(dir $(LOCK)) && cp $$tmp/lock.txt $(LOCK) && echo "wrote $(LOCK)"

clean:
	rm -rf $(VENV) build dist src/*.egg-info
