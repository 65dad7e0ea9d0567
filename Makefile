# Two commands from a fresh clone:  `make demo` runs the embedded demo study, `make test` runs the tests.
# Both create .venv first (uv; the CPU build of torch), so nothing needs installing by hand.
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# this workplace keeps the CPU build of torch on disk; elsewhere uv takes it from PyPI
FIND_LINKS := $(if $(wildcard /opt/wheels/torch-*),--find-links /opt/wheels)
UV     := $(shell command -v uv 2>/dev/null || echo $(VENV)-tools/bin/uv)

.PHONY: demo test lint install
install: $(VENV)/.installed

$(VENV)-tools/bin/uv:
	python3 -m venv $(VENV)-tools && $(VENV)-tools/bin/pip install -q uv

$(VENV)/.installed: pyproject.toml | $(UV)
	$(UV) venv -q --allow-existing --python python3 $(VENV)
	$(UV) pip install -q --python $(PY) --compile-bytecode $(FIND_LINKS) "$(TORCH)" -r pyproject.toml --extra dev
	touch $@

demo: $(VENV)/.installed
	$(PY) -m sweep run --study demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(PY) -m ruff check sweep trainer tests bench
