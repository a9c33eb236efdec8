# The README's two commands. Each sets itself up on a fresh machine: a virtualenv in .venv with
# torch ($(WARPGRAD_TORCH)) and this package (editable, with the test extras). A stamp file in
# .venv skips the installs while pyproject.toml and WARPGRAD_TORCH are unchanged.
#
#   make run    the main job: baseline vs WarpGrad on KanjiVG multi-shot (quick profile, offline) -> runs/kanji-multishot
#               (a second `make run` replaces the first: --overwrite)
#   make test   the test suite
#
# WARPGRAD_TORCH picks the torch requirement, e.g. WARPGRAD_TORCH="torch==2.5.1" make test.

PYTHON ?= python3
VENV ?= .venv
WARPGRAD_TORCH ?= torch==2.13.0

BIN := $(VENV)/bin
STAMP := $(VENV)/.warpgrad-installed
TORCH_SPEC := $(VENV)/.warpgrad-torch

.PHONY: run test setup FORCE

run: $(STAMP)
	$(BIN)/warpgrad run kanji-multishot --method baseline,warpgrad --profile quick --out runs/kanji-multishot --overwrite

# pytest's own exit code fails the target, including 5 (no tests collected)
test: $(STAMP)
	$(BIN)/python -m pytest -q

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Rewritten only when WARPGRAD_TORCH changes, so that a new torch requirement reinstalls.
$(TORCH_SPEC): FORCE | $(BIN)/python
	@echo '$(WARPGRAD_TORCH)' | cmp -s - $@ || echo '$(WARPGRAD_TORCH)' > $@

$(STAMP): pyproject.toml $(TORCH_SPEC) | $(BIN)/python
	$(BIN)/python -m pip install '$(WARPGRAD_TORCH)'
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

FORCE:
