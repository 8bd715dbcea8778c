# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean-data setup-redis

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,astra]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lowdose-tomo demo

# Redis for the queueserver (tests, `lowdose-tomo queue start`): Debian's package when missing.
setup-redis:
	@if command -v redis-server >/dev/null 2>&1 || test -x /usr/bin/redis-server \
	    || test -n "$$LOWDOSE_REDIS_SERVER"; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (apt-get)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server >/dev/null; \
	else \
	    echo "redis-server is missing: install it (apt-get install redis-server / brew install redis)" \
	         "or set LOWDOSE_REDIS_SERVER to a redis-server binary" >&2; exit 1; \
	fi

# Three test processes, each running one test module at a time (a module's servers, IOC and trained
# fixtures stay shared within it), with one TensorFlow/OpenMP thread each: much of the suite waits
# on child processes and timeouts, and two processes left a core idle 14 % of the time while their
# TensorFlow thread pools competed for it (docs/benchmarks.md: 10 min 55 s -> 8 min 57 s to
# 9 min 47 s here).
# The longest modules start first (tests/conftest.py). TEST_WORKERS=0 runs everything in this
# process; TEST_THREADS= leaves the thread counts to the libraries.
TEST_WORKERS ?= 3
TEST_THREADS ?= TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=1
test: $(STAMP) setup-redis
	$(TEST_THREADS) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_scan.py
	$(BIN)/python benchmarks/bench_streaming.py

clean-data:
	rm -rf lowdose-data
