# pgwitness — two commands for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PG_BIN ?= /usr/lib/postgresql/15/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-unit lint bench venv system-deps clean help

help:
	@echo "make demo   - throwaway Postgres + pgwitness, one short agent session through it"
	@echo "make test   - the full test suite (real PostgreSQL, real S3 server)"
	@echo "make test-unit - tests/unit only: no PostgreSQL, network or subprocesses (under a minute)"
	@echo "make lint   - ruff, mypy and the import-layering check"
	@echo "make bench  - pgbench: direct vs pgbouncer vs pgwitness (see docs/benchmarks.md)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# PostgreSQL 15 server binaries, psql and pgbench (and pgbouncer for benchmarks), and the
# JDBC driver with a JDK for the JDBC tests, and promtool (Debian's prometheus package) for the
# alert-rule tests, installed from Debian's packages when missing.
JDBC_JAR ?= /usr/share/java/postgresql.jar
system-deps:
	@missing=""; \
	[ -x $(PG_BIN)/initdb ] && [ -x $(PG_BIN)/pgbench ] || missing="$$missing postgresql-15"; \
	command -v psql >/dev/null || missing="$$missing postgresql-client-15"; \
	command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing="$$missing pgbouncer"; \
	[ -f $(JDBC_JAR) ] || missing="$$missing libpostgresql-jdbc-java"; \
	command -v javac >/dev/null || missing="$$missing default-jdk-headless"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

demo: venv system-deps
	$(BIN)/pgwitness demo

test: venv system-deps
	$(BIN)/pytest -q

test-unit: venv
	$(BIN)/pytest -q tests/unit

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m devtools.layering

bench: venv system-deps
	$(BIN)/python bench/pgbench_compare.py

clean:
	rm -rf .demo .bench .pytest_cache .ruff_cache
