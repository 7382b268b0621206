# The two set-up commands of the README: `make demo` (the main job) and `make test`.
PYTHON ?= python3

.PHONY: install data demo test bench

install:
	$(PYTHON) -m pip install -e '.[dev]'

data:
	@test -d /usr/share/datasets/fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)

demo: install data
	$(PYTHON) -m mixqvit demo

test: install data
	$(PYTHON) -m pytest tests

bench:
	$(PYTHON) -m benchmarks.solvers
	$(PYTHON) -m benchmarks.ptq
	$(PYTHON) -m benchmarks.profiling
