# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv if it is missing and install tritc into it with its test extras.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tritc-installed

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check tritc tests examples benchmarks

test: $(STAMP) lint
	$(PY) -m pytest -n 2 -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
