# The two commands a newcomer needs: `make demo` (the main job, offline, on the
# embedded defaults) and `make test`. Both install into .venv first if needed.
PYTHON ?= python3
VENV ?= .venv
# A plain `torch` would pull a multi-GB CUDA build; pin what you want here,
# e.g. `make install TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'`.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
PACKAGES := -e ".[test,docs]" -e plugins/optical -e plugins/mx -e plugins/normuon -e examples/bitflip
DEMO_RUN ?= runs/demo

.PHONY: install demo test docs clean

$(BIN)/.installed: pyproject.toml $(wildcard plugins/*/pyproject.toml examples/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q $(PACKAGES)
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/newcompute list-paradigms
	$(BIN)/newcompute train --model tiny --init scratch --paradigm optical --steps 60 --output-dir $(DEMO_RUN) --overwrite
	$(BIN)/newcompute eval $(DEMO_RUN)

test: install
	$(BIN)/python -m pytest -q -n 2 ; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc
	$(MAKE) docs

docs: install
	$(BIN)/mkdocs build --strict --quiet --site-dir $(VENV)/site

clean:
	rm -rf $(VENV) runs site
