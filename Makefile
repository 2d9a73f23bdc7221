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

# Build a guest, translate a batch, print a fault summary.
demo: $(STAMP)
	$(VENV)/bin/vecmmu demo

# The whole suite, then a small subset again with the JIT off (kernel lines covered).
test: $(STAMP)
	$(VPY) -m pytest -q
	NUMBA_DISABLE_JIT=1 $(VPY) -m pytest -q -m nojit

bench: $(STAMP)
	$(VPY) benchmarks/bench_walk.py

clean:
	rm -rf $(VENV) build *.egg-info
