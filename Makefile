# The two set-up commands of the README: `make demo` (the main job) and `make test`.
PYTHON ?= python3

.PHONY: install sysdeps demo test bench

install:
	$(PYTHON) -m pip install -e '.[dev]'

# Debian packages: the real Fashion-MNIST (MIT) for the demo and tests, and CBC for the "pulp" backend
# (PuLP's bundled CBC is deprecated). Skipped when already present.
sysdeps:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] || ! command -v cbc >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist coinor-cbc; fi

demo: install sysdeps
	$(PYTHON) -m mixqvit demo

test: install sysdeps
	$(PYTHON) -m pytest tests

bench:
	$(PYTHON) -m benchmarks.solvers
	$(PYTHON) -m benchmarks.ptq
	$(PYTHON) -m benchmarks.profiling
