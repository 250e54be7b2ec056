# glmv-portable — quick start: `make demo` (set up + run the demo), `make test` (set up + tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.glmv-setup

.PHONY: setup demo test bench clean llama-wheel

setup: $(STAMP)

# The portable llama.cpp build is made once and cached by version + flags
# (~/.cache/glmv-portable, or $GLMV_BUILD_CACHE); tests run against that same build.
$(STAMP): pyproject.toml portable_build/llama_build.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m portable_build.llama_build > $(VENV)/llama-wheel.txt
	$(BIN)/python -m pip install -q --no-deps --force-reinstall "$$(cat $(VENV)/llama-wheel.txt)"
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -c "import runtime.backends as b; b.import_llama_cpp(); print('llama.cpp CPU variant:', b.ensure_loaded().cpu_variant)"
	touch $(STAMP)

demo: setup
	$(BIN)/glmv demo

test: setup
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/python bench/convert_bench.py

clean:
	rm -rf $(VENV) build .pytest_cache
