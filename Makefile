# The README's two commands. Each works on a fresh machine with only Python 3.11+ and pip:
# uv is installed with pip when it is missing.
UV ?= $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif

.PHONY: dev test bench mutants uv

uv:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv \
		|| python3 -m pip install --quiet --user uv

dev: uv
	$(UV) sync --frozen
	$(UV) run switchyard db upgrade
	$(UV) run switchyard dev

test: uv
	$(UV) sync --frozen
	$(UV) run ruff check .
	$(UV) run mypy .
	$(UV) run pytest

bench: uv
	$(UV) sync --frozen
	$(UV) run python bench/all.py

# Mutation testing (slow, not part of `make test`): AREAS="retry http" for some areas only.
mutants: uv
	$(UV) sync --frozen
	$(UV) run python scripts/mutants.py $(AREAS)
