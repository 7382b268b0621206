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

# The tests that compare with recorded numbers run a second time with torch's and MKL's SIMD
# kernels pinned to the lowest level, so a reference that only holds on one CPU fails here.
test: install sysdeps
	$(PYTHON) -m pytest tests
	ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 $(PYTHON) -m pytest -m recorded tests

bench:
	$(PYTHON) -m benchmarks.solvers
	$(PYTHON) -m benchmarks.ptq
	$(PYTHON) -m benchmarks.profiling
