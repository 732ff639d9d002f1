# Two commands do all the set-up: `make demo` and `make test`.
# Both create .venv when it is missing and install through constraints.txt, which pins
# torch==2.13.0 (the CPU wheel) and every other dependency at a tested version.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test mutate install install-dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(PY) pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(PY) pyproject.toml constraints.txt
	$(PIP) -e ".[dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(PY) -m nnh demo

test: install-dev
	$(PY) -m pytest -q -p no:cacheprovider tests

# Mutation testing of nnh/func against tests/func (slow: minutes to an hour; not part of test).
mutate: install-dev
	$(VENV)/bin/mutmut run
	$(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) nnh-demo *.egg-info
