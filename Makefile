# Two commands on a fresh machine (Python 3.10+, no conda):
#   make run    set up .venv from pyproject.toml, then rerun every notebook on the default profile
#   make test   set up .venv from pyproject.toml, then run the test suite (smoke profile included)
# The virtual environment is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= default
PYTEST_ARGS ?= -n auto --maxprocesses=4

.PHONY: run test venv bench clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ropelib)" >/dev/null
	touch $@

venv: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) run_all.py --profile $(PROFILE)

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) benchmarks/rope_apply.py
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/profile_cost.py --profile full

clean-venv:
	rm -rf $(VENV)
