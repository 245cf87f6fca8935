# Two commands do everything on a fresh machine (Python >= 3.10 with venv):
#   make demo   - create .venv, install, run the whole chain on the built-in generated corpus
#   make test   - create .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: demo test bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(PY) -m edge_runtime demo --out out/demo

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) bench/frontend.py
	$(PY) bench/runtime.py
	$(PY) bench/serial_link.py
	$(PY) bench/firmware.py

clean:
	rm -rf out .pytest_cache build *.egg-info
