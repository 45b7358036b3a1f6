# Two commands on a fresh machine (Python 3.10+, no conda):
#   make run    set up .venv from pyproject.toml, then rerun every notebook on the default profile (the reference run)
#   make test   set up .venv from pyproject.toml, then lint (ruff) and run the test suite (smoke profile included)
# The virtual environment is rebuilt only when pyproject.toml changes.
#
# torch: the CPU build by default. PyPI's Linux wheel of torch is the CUDA build (several GB of CUDA and cuDNN
# wheels), so torch is installed first from PyTorch's CPU index, when that index answers within 10 s; else
# from pip's configured index, as any other package. On a machine with an NVIDIA GPU, opt in to CUDA with
# `make clean-venv venv TORCH=cuda` (torch from pip's configured index: PyPI's CUDA build on Linux).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= default
PYTEST_ARGS ?= -n auto --maxprocesses=4 --dist worksteal
TORCH ?= cpu
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# the torch pin of pyproject.toml, e.g. torch==2.13.0
TORCH_PIN := $(shell sed -n 's/^ *"\(torch==[^"]*\)".*/\1/p' pyproject.toml)

.PHONY: run test lint venv bench clean-venv

$(VENV)/.installed: pyproject.toml
	@case "$(TORCH)" in cpu|cuda) ;; *) echo "TORCH must be cpu or cuda, got '$(TORCH)'" >&2; exit 2;; esac
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	@if [ "$(TORCH)" = cpu ]; then \
	  if $(PY) -c "import urllib.request; urllib.request.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=10)" 2>/dev/null; then \
	    echo "$(PY) -m pip install --quiet --index-url $(TORCH_CPU_INDEX) '$(TORCH_PIN)'"; \
	    $(PY) -m pip install --quiet --index-url $(TORCH_CPU_INDEX) '$(TORCH_PIN)'; \
	  else \
	    echo "note: $(TORCH_CPU_INDEX) did not answer; torch comes from pip's configured index (PyPI's Linux wheel is the CUDA build)"; \
	  fi; \
	fi
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ropelib)" >/dev/null
	touch $@

venv: $(VENV)/.installed

# the default profile is the reference run (it replaces the committed outputs); another profile runs in build/<profile>/
run: $(VENV)/.installed
	$(PY) run_all.py --profile $(PROFILE)$(if $(filter default,$(PROFILE)), --reference)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) benchmarks/rope_apply.py
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/profile_cost.py --profile full

clean-venv:
	rm -rf $(VENV)
