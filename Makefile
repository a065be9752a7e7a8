# Two commands do all setup on a fresh machine with Python 3.11:
#   make demo   synthetic BraTS-like data -> train GMD + DS with the bundle -> 15-subset table ->
#               gmd-monai segment on a case with two modalities missing (budget: 3 minutes)
#   make test   lint + format check + the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench monailabel-check clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m gmd_monai demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	bash benchmarks/run_all.sh

# a real MONAI Label server in its own venv (.venv-monailabel): /info, /infer, /train on this bundle,
# then on the Model Zoo archive served by a Python without gmd-monai
monailabel-check:
	bash scripts/monailabel_check/run.sh
	bash scripts/monailabel_check/run.sh --zoo

clean:
	rm -rf $(VENV) .venv-monailabel bundle/data bundle/runs bundle/eval demo_output .pytest_cache .ruff_cache
