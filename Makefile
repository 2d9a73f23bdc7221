# Two entry points (see README): `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: demo test test-nojit bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job on bundled data: a real valgrind lackey trace of data/wordfreq.c, translated
# through the address space its own /proc/self/maps describes, then a fault summary.
demo: $(STAMP)
	$(VENV)/bin/vecmmu demo --trace-file data/wordfreq.lackey.xz

# The whole suite, then a small subset again with the JIT off (kernel lines covered).
test: $(STAMP)
	$(VPY) -m pytest -q
	NUMBA_DISABLE_JIT=1 $(VPY) -m pytest -q -m nojit

# Speed measurements: one table, every contender next to a baseline of the same run, then
# PASS/MISS targets (never fails on speed). BENCH_ARGS=--quick for a short run.
bench: $(STAMP)
	$(VPY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
