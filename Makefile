# a6fast: `make serve` starts the runner on the built-in examples, `make test` runs every test.
# Both set up .venv first (and, on a bare Debian as root, the system packages a build needs).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SOCKET ?= /tmp/a6fast.sock
STAMP := $(VENV)/.installed

.PHONY: setup install dev serve test bench fuzz soak clean system-deps

$(STAMP): pyproject.toml setup.py a6fast/_codec.pyx
	@$(PYTHON) -c 'import ensurepip, venv, sysconfig, os, shutil; \
		assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")); \
		assert shutil.which("cc") or shutil.which("gcc")' 2>/dev/null || $(MAKE) system-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && apt-get install -y -q python3-venv python3-dev gcc make; \
	else \
		echo "need: python3-venv, python3-dev (Python.h) and a C compiler"; exit 1; \
	fi

## setup: create .venv with a6fast (compiled codec) and the test tools
setup: $(STAMP)

## install: install a6fast into the current Python (system or active venv)
install:
	$(PYTHON) -m pip install .

## dev / serve: run the runner on $(SOCKET) with the built-in example plugins
dev: $(STAMP)
	$(VENV)/bin/a6fast serve --listen unix:$(SOCKET) --log-level debug

serve: $(STAMP)
	$(VENV)/bin/a6fast serve --listen unix:$(SOCKET)

## test: the whole test suite, both codec paths
test: $(STAMP)
	$(PY) -m pytest -q

## bench: codec and whole-call benchmarks side by side (pytest-benchmark)
bench: $(STAMP)
	$(PY) -m pytest bench -q --benchmark-only --benchmark-group-by=group --benchmark-sort=name --benchmark-columns=median,iqr,min,rounds

## floor: our runner against bench-tools' ideal_runner under a6load, alternating rounds
floor: $(STAMP)
	$(PY) bench/floor.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .benchmarks .hypothesis a6fast/_codec.c a6fast/*.so a6fast/*.html
	find . -name __pycache__ -prune -exec rm -rf {} +
