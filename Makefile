# web10g developer interface: `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=
ASAN_LIB = $(shell cc -print-file-name=libasan.so)
# preloaded with ASan so C++ extensions (matplotlib's) find the real __cxa_throw
STDCXX_LIB = $(shell cc -print-file-name=libstdc++.so.6)

.PHONY: help deps venv build test demo bench soak lint debug sanitize clean fuzz

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

deps: ## install missing system packages (libmnl-dev, pkg-config, compiler, iproute2)
	@PYTHON=$(PYTHON) ./tools/install-deps.sh

# Stamps: .installed is the package alone (editable, runtime dependencies and the build
# tools), all that `make demo` needs; .installed-<name> adds the extras <name> needs on top.
$(VENV)/.installed: pyproject.toml setup.py | deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel "Cython>=3" "numpy>=2"
	$(PY) -m pip install -q --no-build-isolation -e .
	touch $@

EXTRAS_test  = test
EXTRAS_lint  = lint
EXTRAS_fuzz  = fuzz
EXTRAS_bench = bench,record,collector
# The package is installed already: pip takes the extras from its metadata and adds only
# their requirements (no rebuild of the extensions).
$(VENV)/.installed-%: $(VENV)/.installed
	$(PY) -m pip install -q 'web10g[$(EXTRAS_$*)]'
	touch $@

# The test suite also runs the ebpf backend (clang, bpftool, libbpf) and a real Prometheus
# server: system packages that `make demo` does not need, installed only for the tests.
$(VENV)/.installed-test: $(VENV)/.installed
	./tools/install-ebpf-deps.sh
	./tools/install-collector-deps.sh
	$(PY) -m pip install -q 'web10g[$(EXTRAS_test)]'
	touch $@

# The benchmarks time the ebpf backend and the collector's sinks too.
$(VENV)/.installed-bench: $(VENV)/.installed
	./tools/install-ebpf-deps.sh
	$(PY) -m pip install -q 'web10g[$(EXTRAS_bench)]'
	touch $@

venv: $(VENV)/.installed ## create the virtual environment with the package installed editable

build: venv ## compile the extensions in place
	$(PY) setup.py -q build_ext --inplace

test: $(VENV)/.installed-test build ## run the test suite
	$(PY) -m pytest $(PYTEST_ARGS)

demo: build ## sample this machine's live flows and show them
	$(PY) -m web10g.demo

# Every benchmark but the soak (hours at its full size: `make soak`).
BENCH_SCRIPTS = $(filter-out benchmarks/bench_soak.py,$(wildcard benchmarks/bench_*.py))
SOAK_ARGS ?=

bench: $(VENV)/.installed-bench build ## run the benchmarks (tables of ratios against baselines; BENCH_ARGS=--quick)
	@run=benchmarks/results/run-$$(date -u +%Y%m%dT%H%M%SZ); mkdir -p $$run; \
	for b in $(BENCH_SCRIPTS); do echo "== $$b"; \
	  WEB10G_BENCH_RESULTS=$$run $(PY) $$b $(BENCH_ARGS) || echo "!! $$b failed"; done; \
	$(PY) benchmarks/report.py $$run --readme README.md

soak: build $(VENV)/.installed-bench ## soak: RSS/fds over 1,000,000 polls of 10,000 sockets, then 10 min of churn (hours; SOAK_ARGS=--quick)
	$(PY) benchmarks/bench_soak.py $(SOAK_ARGS)

# Fuzzing (fuzz/README.md): the C decoders as libFuzzer harnesses (clang), the Python
# readers and the filter compiler under atheris. Per target: FUZZ_SECONDS (default 60) or
# FUZZ_RUNS executions; FUZZ_TARGETS=a,b picks targets; FUZZ_JOBS targets at a time.
FUZZ_SECONDS ?= 60
FUZZ_RUNS ?=
FUZZ_TARGETS ?=
FUZZ_JOBS ?= 2
fuzz: build $(VENV)/.installed-fuzz ## fuzz every decoder (FUZZ_SECONDS=60 or FUZZ_RUNS=N per target); prints executions per target
	$(PY) fuzz/run.py $(if $(FUZZ_RUNS),--runs $(FUZZ_RUNS),--seconds $(FUZZ_SECONDS)) \
	    --jobs $(FUZZ_JOBS) $(if $(FUZZ_TARGETS),--targets $(FUZZ_TARGETS))

# (cython-lint runs pycodestyle from PATH: the venv's is put first)
lint: $(VENV)/.installed-lint ## ruff, cython-lint and mypy
	$(VENV)/bin/ruff check web10g tests benchmarks
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/cython-lint web10g/*.pyx web10g/*.pxd
	$(VENV)/bin/mypy web10g

debug: $(VENV)/.installed-test ## debug build (-O0 -g, Cython bounds checks) and the tests under it
	WEB10G_DEBUG=1 $(PY) setup.py -q build_ext --inplace --force
	$(PY) -m pytest $(PYTEST_ARGS)

sanitize: $(VENV)/.installed-test ## ASan+UBSan build and the tests under it
	WEB10G_SANITIZE=1 $(PY) setup.py -q build_ext --inplace --force
	LD_PRELOAD="$(ASAN_LIB) $(STDCXX_LIB)" ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
	    $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)
	$(PY) setup.py -q build_ext --inplace --force

clean: ## remove build products and the virtual environment
	rm -rf build $(VENV) *.egg-info web10g/*.so web10g/*.c .pytest_cache
