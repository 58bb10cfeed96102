# pgwitness — two commands for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PG_BIN ?= /usr/lib/postgresql/15/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-unit lint bench venv compile system-deps clean help

help:
	@echo "make demo   - throwaway Postgres + pgwitness, one short agent session through it"
	@echo "make test   - the full test suite (real PostgreSQL, real S3 server)"
	@echo "make test-unit - tests/unit only: no PostgreSQL, network or subprocesses (under a minute)"
	@echo "make lint   - ruff, mypy and the import-layering check"
	@echo "make compile - the hot path compiled with mypyc (demo, test and bench do it first)"
	@echo "make bench  - pgbench: direct vs pgbouncer vs pgwitness (see docs/benchmarks.md)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The hot path compiled with mypyc (common/compiled.py lists the modules; their .py sources
# stay the reference). Rebuilt when a source changes; a stale build is never imported.
COMPILED_SOURCES := $(shell $(PYTHON) -c "import sys; sys.path.insert(0, '.'); from common.compiled import MODULES; print(' '.join(m.replace('.', '/') + '.py' for m in MODULES))" 2>/dev/null)
common/compiled.json: $(VENV)/.installed common/compiled.py devtools/compile.py $(COMPILED_SOURCES)
	$(BIN)/python -m devtools.compile

compile: common/compiled.json

# PostgreSQL 15 server binaries, psql and pgbench (and pgbouncer for benchmarks), and the
# JDBC driver with a JDK for the JDBC tests, and promtool (Debian's prometheus package) for the
# alert-rule tests, and gcc with the Python headers for the compiled hot path (make compile),
# installed from Debian's packages when missing.
JDBC_JAR ?= /usr/share/java/postgresql.jar
system-deps:
	@missing=""; \
	[ -x $(PG_BIN)/initdb ] && [ -x $(PG_BIN)/pgbench ] || missing="$$missing postgresql-15"; \
	command -v psql >/dev/null || missing="$$missing postgresql-client-15"; \
	command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing="$$missing pgbouncer"; \
	[ -f $(JDBC_JAR) ] || missing="$$missing libpostgresql-jdbc-java"; \
	command -v javac >/dev/null || missing="$$missing default-jdk-headless"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	$(PYTHON) -c "import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" || missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

demo: venv system-deps compile
	$(BIN)/pgwitness demo

# Everything on the compiled hot path, and the unit tests again on its pure-Python sources
# (the reference). That second run is CPU-bound and touches nothing outside its process
# (tests/unit/conftest.py), while the first mostly waits on its servers: it runs beside it
# (at the same CPU priority: some unit tests time asyncio sleeps of a millisecond), its
# output printed after the first's; both must pass. The main run is split over
# TEST_WORKERS pytest-xdist workers, whole test files each (--dist loadfile), every worker
# with its own PostgreSQL cluster and S3 server (docs/decisions.md, "The suite on two
# workers"); TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: venv system-deps compile
	@log=$$(mktemp); \
	echo "PGWITNESS_PURE_PYTHON=1 $(BIN)/pytest -q -p no:cacheprovider tests/unit (beside)"; \
	PGWITNESS_PURE_PYTHON=1 $(BIN)/pytest -q -p no:cacheprovider tests/unit >$$log 2>&1 & p=$$!; \
	trap 'kill $$p 2>/dev/null; rm -f $$log' INT TERM; \
	echo "$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile"; \
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile; main=$$?; \
	wait $$p; pure=$$?; \
	echo "== PGWITNESS_PURE_PYTHON=1 $(BIN)/pytest -q tests/unit (ran beside the above):"; \
	cat $$log; rm -f $$log; \
	[ $$main -eq 0 ] && [ $$pure -eq 0 ]

test-unit: venv compile
	$(BIN)/pytest -q tests/unit

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m devtools.layering

bench: venv system-deps compile
	$(BIN)/python bench/pgbench_compare.py

clean:
	rm -rf .demo .bench .pytest_cache .ruff_cache
	-$(BIN)/python -m devtools.compile --clean
