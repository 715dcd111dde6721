# The two commands of the README:
#   make demo   the main job: a real Ceph lab in network namespaces reproduces the 2014 incident and each fix
#   make test   the whole test suite (ruff, mypy --strict, unit and real-kernel/real-Ceph integration tests)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test lint unit demo clean
setup:
	bash scripts/setup.sh

lint: setup
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy

test: setup lint
	$(PY) -m pytest -q tests

unit: setup
	$(PY) -m pytest -q tests/unit

demo: setup
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
