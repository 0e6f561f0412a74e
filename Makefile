# The README's commands. Each target sets the project up first (once; again when the
# requirements change), then runs with the virtual environment's tools on the PATH, because
# dvc.yaml's commands call `python`.
VENV  := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup run test test-fast bench

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

# The main job: the whole pipeline with params.yaml as it is.
run: setup
	dvc repro

# Every test, the end-to-end DVC runs included.
test: setup
	pytest

# Unit tests only (skips the slow end-to-end pipeline runs).
test-fast: setup
	pytest -m "not slow"

# Every benchmark on its real data (long: tens of minutes); figures go to docs/benchmarks.md.
bench: setup
	for script in benchmarks/bench_*.py; do python $$script || exit 1; done
