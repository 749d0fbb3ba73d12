# The two commands of README.md: `make run` (demo viewer) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test bench demo clean

setup:
	@bash scripts/bootstrap.sh

run: setup
	$(VENV)/bin/lightbox view

test: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/bench_load.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
