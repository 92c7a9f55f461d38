# The two commands a newcomer needs: `make demo` (the main job, offline, on the
# embedded defaults) and `make test`. Both install into .venv first if needed:
# the demo what a user installs, the tests that plus their own tools.
PYTHON ?= python3
VENV ?= .venv
# A plain `torch` would pull a multi-GB CUDA build; pin what you want here,
# e.g. `make install TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'`.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
PACKAGES := -e . -e plugins/optical -e plugins/mx -e plugins/normuon -e examples/bitflip
# torchao (numerics to compare against) stays out of the demo's install: transformers imports it whenever it
# is there, and on a CPU machine it warns about its CUDA libraries on every command.
DEV_PACKAGES := -e ".[test,docs]"
DEMO_RUN ?= runs/demo

.PHONY: install install-dev demo test docs clean

$(BIN)/.installed: pyproject.toml $(wildcard plugins/*/pyproject.toml examples/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q $(PACKAGES)
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed
	$(BIN)/python -m pip install -q $(DEV_PACKAGES)
	touch $@

install: $(BIN)/.installed

install-dev: $(BIN)/.installed-dev

demo: install
	$(BIN)/newcompute list-paradigms
	$(BIN)/newcompute train --model tiny --init scratch --paradigm optical --steps 60 --output-dir $(DEMO_RUN) --overwrite
	$(BIN)/newcompute eval $(DEMO_RUN)

test: install-dev
	$(BIN)/python -m pytest -q -n 2 ; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc
	$(MAKE) docs

docs: install-dev
	$(BIN)/mkdocs build --strict --quiet --site-dir $(VENV)/site

clean:
	rm -rf $(VENV) runs site
