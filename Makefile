# The README's commands. Everything runs in a local virtual environment (.venv) created on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all compare figures clean

setup: $(STAMP)

$(STAMP): setup.py constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints-cpu.txt -e '.[dev,export]'
	$(PY) -m atldas.warmup
	touch $(STAMP)

demo: setup
	rm -rf runs/demo
	$(PY) -m atldas search --space matting --out runs/demo --threads 2
	@echo "demo outputs: runs/demo (genotype.json, history.jsonl, plots/, tb/)"

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

compare: setup
	$(PY) experiments/compare.py --json runs/compare/compare.json

figures: setup
	$(PY) experiments/readme_figures.py $(if $(wildcard runs/demo/genotype.json),--demo runs/demo,)

clean:
	rm -rf $(VENV) runs build *.egg-info
