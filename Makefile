# Set-up and the two main commands. Everything a fresh machine lacks is installed here.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-0.1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FMNIST := /usr/share/datasets/fashion-mnist
SPACE ?= spaces/macs300.yaml
PYTEST_ARGS ?=

.PHONY: run test data postgres venv lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0   # the CPU build; a GPU box may pin its own
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

data:
	@test -d $(FMNIST) || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist; }

# PostgreSQL binaries for the storage tests (the tests start their own server on 127.0.0.1)
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
		$(SUDO) apt-get install -y -q postgresql; }

run: venv data
	$(BIN)/mfsearch run $(SPACE)

test: venv data postgres
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check mfsearch tests benchmarks

bench: venv data
	$(BIN)/python benchmarks/bench_complexity.py
	$(BIN)/python benchmarks/bench_samplers.py
	$(BIN)/python benchmarks/bench_engines.py

clean:
	rm -rf $(VENV) runs .pytest_cache
