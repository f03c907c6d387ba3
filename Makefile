# The README's two commands. Each works on a fresh machine with only Python 3.11+ and pip:
# without a uv on PATH, uv is installed with pip into a small virtualenv of the project's,
# .tools (Debian's and Ubuntu's Python refuse installs into themselves: PEP 668).
PYTHON ?= python3
TOOLS := .tools
UV ?= $(shell command -v uv 2>/dev/null)
UV := $(or $(UV),$(TOOLS)/bin/uv)

.PHONY: dev test test-fast bench mutants uv

uv: $(filter $(TOOLS)/bin/uv,$(UV))
	@$(UV) --version >/dev/null

# Debian's and Ubuntu's python3 has no ensurepip (so no venv) without python3-venv.
$(TOOLS)/bin/uv:
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { echo "make: uv is not on PATH and \
	$(PYTHON) cannot make a virtualenv to install it into (no ensurepip): install the \
	python3-venv package (apt install python3-venv), or install uv" >&2; exit 1; }
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv
	@echo "make: uv is in $(TOOLS)/bin: put that on PATH for the README's uv commands"

# Dependencies are compiled to bytecode when installed: every process (workers, the CLI,
# the tests' subprocesses) then starts without compiling them again, even where
# PYTHONDONTWRITEBYTECODE is set.
SYNC = $(UV) sync --frozen --compile-bytecode
# What each target needs, and no more. Running: the project's dependencies, none of the
# dev or bench groups (the tests' and benchmarks' tools), removing nothing a `make test`
# installed (--inexact). The tests, lint and mutants: every group. The benchmarks: the
# bench group, and the dev group's moto and pytest (they borrow the tests' helpers).
SYNC_RUN = $(SYNC) --no-default-groups --inexact
SYNC_ALL = $(SYNC) --all-groups
SYNC_BENCH = $(SYNC) --no-default-groups --group bench --group dev
# `uv run` would sync the default groups (all of them) first: each target synced above.
RUN = $(UV) run --no-sync

dev: uv
	$(SYNC_RUN)
	$(RUN) switchyard db upgrade
	$(RUN) switchyard dev

test: uv
	$(SYNC_ALL)
	$(RUN) ruff check .
	$(RUN) mypy .
	$(RUN) pytest

# The unit tier only (no worker, no world; see tests/conftest.py), on every core.
# `make test` runs every tier, as CI does.
test-fast: uv
	$(SYNC_ALL)
	$(RUN) pytest -m unit -q -n auto

bench: uv
	$(SYNC_BENCH)
	$(RUN) python bench/all.py

# Mutation testing (slow, not part of `make test`): AREAS="retry http" for some areas only.
mutants: uv
	$(SYNC_ALL)
	$(RUN) python scripts/mutants.py $(AREAS)
