# pnc — the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
TORCH := torch==2.14.1 torchvision==0.29.1
# what `make test` installs: the optional timm and onnx extras too, so that CI runs their tests
EXTRAS := data,plot,dev,timm,onnx

.PHONY: demo test test-unit bench lint format-check typecheck clean venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(VENV)/bin/python
	$(PIP) install $(TORCH)
	touch $@

$(VENV)/.stamp-%: pyproject.toml $(VENV)/.torch
	$(PIP) install -e ".[$*]"
	touch $@

venv: $(VENV)/.stamp-$(EXTRAS)

demo: $(VENV)/.stamp-$(EXTRAS)
	PY=$(PY) bash examples/demo.sh

test: $(VENV)/.stamp-$(EXTRAS)
	$(PY) -m pytest

# the fast tier's unit tests only (tests/unit), seconds rather than minutes
test-unit: $(VENV)/.stamp-$(EXTRAS)
	$(PY) -m pytest tests/unit

# Fuzz every file reader (model, delta, cloned, surrogate, search, info) for PNC_FUZZ_SECONDS (default 300).
PNC_FUZZ_SECONDS ?= 300
fuzz: $(VENV)/.stamp-$(EXTRAS)
	PNC_FUZZ_SECONDS=$(PNC_FUZZ_SECONDS) $(PY) -m pytest tests/fuzz -q -s

lint: $(VENV)/.stamp-$(EXTRAS)
	$(PY) -m ruff check pnc_cli tests benchmarks examples

format-check: $(VENV)/.stamp-$(EXTRAS)
	$(PY) -m ruff format --check pnc_cli tests benchmarks examples

typecheck: $(VENV)/.stamp-$(EXTRAS)
	$(PY) -m mypy pnc_cli

bench: $(VENV)/.stamp-$(EXTRAS),bench
	PY=$(PY) bash benchmarks/run_all.sh

clean:
	rm -rf demo-out bench-out .pytest_cache .ruff_cache
