# glmv-portable — quick start: `make demo` (set up + run the demo), `make test` (set up + tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.glmv-setup

.PHONY: setup demo test bench clean llama-wheel system-deps build-deps bundle plate-model plate-accuracy screenshots \
        windows-deps bundle-windows test-windows

setup: $(STAMP)

# The portable llama.cpp build is made once and cached by version + flags
# (~/.cache/glmv-portable, or $GLMV_BUILD_CACHE); tests run against that same build.
$(STAMP): pyproject.toml portable_build/llama_build.py portable_build/vulkan_compat/vulkan/vulkan.hpp | build-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m portable_build.llama_build > $(VENV)/llama-wheel.txt
	$(BIN)/python -m pip install -q --no-deps --force-reinstall "$$(cat $(VENV)/llama-wheel.txt)"
	$(BIN)/python -m pip install -q -e '.[test,bundle]'
	$(BIN)/python -c "import runtime.llama.backends as b; b.import_llama_cpp(); print('llama.cpp CPU variant:', b.ensure_loaded().cpu_variant)"
	touch $(STAMP)

demo: setup
	$(BIN)/glmv demo

# Debian packages the tests need: Chromium (the browser test drives it through the Playwright pip
# wheel; never `playwright install`), CJK fonts for the Chinese UI, Xvfb and Qt's xcb libraries for
# the real pywebview window, Mesa's lavapipe (a software Vulkan device) for the Vulkan tests. Idempotent and instant when present; without root (or apt) it only
# says what to install; a failed install warns, and the tests that need a package skip with why.
SYSTEM_PKGS := chromium fonts-noto-cjk xvfb xauth libxcb-cursor0 libxcb-icccm4 libxcb-image0 \
  libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 \
  libxkbcommon-x11-0 libnss3 libxcomposite1 libxdamage1 libxrandr2 libxtst6 libasound2 \
  qemu-user strace fonts-dejavu-core fonts-wqy-microhei mesa-vulkan-drivers
# apt-get install of the packages in $(1) that are missing (the recipe shared by system-deps and
# windows-deps); $(2) is what to say when it cannot install them
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then echo "$@: all present"; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "$@: no apt-get; install:$$missing"; $(3) \
	elif [ "$$(id -u)" != 0 ]; then echo "$@: not root; run: sudo apt-get install -y$$missing"; $(3) \
	else (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing) \
	  || { echo "$@: apt-get failed; $(2)"; $(3) }; fi
endef

system-deps:
	$(call apt_install,$(SYSTEM_PKGS),tests that need$$missing will skip,true;)

# What the llama.cpp build needs for its Vulkan backend: the Vulkan headers and loader, the SPIR-V
# headers and the glslc shader compiler (Debian 12's are the newest the registries have); the
# build itself says what is missing, and GLMV_VULKAN=0 builds without the backend.
BUILD_PKGS := libvulkan-dev glslc spirv-headers
build-deps:
	$(call apt_install,$(BUILD_PKGS),the llama.cpp build will say what it lacks,true;)

# The portable USB folder (PyInstaller onedir): rebuilt when the code, assets or recipe change.
BUNDLE      := dist/glmv-portable
BUNDLE_INFO := $(BUNDLE)/_internal/BUILD-INFO.json
# every source file the bundle freezes (the packages are nested: runtime/engine/*.py, runtime/app/cli/*.py …)
BUNDLE_SRC  := $(shell find runtime convert portable_build/*.py portable_build/glmv.spec portable_build/layout \
                 assets/ui assets/samples assets/models/glmv-plates -type f -not -path '*/__pycache__/*' 2>/dev/null)
bundle: $(BUNDLE_INFO)
$(BUNDLE_INFO): $(STAMP) $(BUNDLE_SRC)
	$(BIN)/python -m portable_build.bundle --out $(BUNDLE)

# The frozen-bundle tests (tests/test_bundle.py) run against the bundle built here.
test: setup system-deps bundle
	GLMV_BUNDLE_DIR=$(CURDIR)/$(BUNDLE) $(BIN)/python -m pytest -q tests

# The Windows bundle, built on this Linux machine (not part of `make test`: the first build takes
# an hour on 2 cores): the verified Windows CPython and locked wheels, llama.cpp cross-compiled with
# mingw-w64 (cached like the Linux build), PyInstaller run under Wine. docs/windows-winpe.md.
WINDOWS_PKGS := wine wine64 osslsigncode gcc-mingw-w64-x86-64-posix g++-mingw-w64-x86-64-posix \
  binutils-mingw-w64-x86-64 ninja-build cmake iproute2
WIN_BUNDLE   := dist/glmv-portable-windows
windows-deps:
	$(call apt_install,$(WINDOWS_PKGS),the Windows bundle needs$$missing,exit 1;)

WIN_BUNDLE_INFO := $(WIN_BUNDLE)/_internal/BUILD-INFO.json
bundle-windows: windows-deps $(WIN_BUNDLE_INFO)
$(WIN_BUNDLE_INFO): $(STAMP) $(BUNDLE_SRC) $(wildcard portable_build/windows/*)
	$(BIN)/python -m pip install -q -e '.[windows]'
	$(BIN)/python -m portable_build.windows.bundle_win --out $(WIN_BUNDLE)

# The Windows bundle under Wine: offline, read-only, from a path with spaces and non-ASCII characters.
test-windows: bundle-windows system-deps
	GLMV_WINDOWS_BUNDLE_DIR=$(CURDIR)/$(WIN_BUNDLE) $(BIN)/python -m pytest -q -s tests/test_windows_bundle.py

bench: setup
	$(BIN)/python bench/convert_bench.py

# The demo model: train by the staged recipe on CPU (~75 min on 2 cores, seeded; an interrupted run
# continues with PLATE_RESUME=--resume, a new one over an old run needs PLATE_RESUME=--fresh), release
# into assets/models/glmv-plates (HF checkpoint + Q8_0 GGUF pair), then measure it on 200 held-out
# plates and record the fields the self-test checks. docs/demo-model.md says what each step does.
PLATE_RUN ?= build/plate-model
PLATE_RESUME ?=
plate-model: setup
	$(BIN)/python -m convert.synthetic.train_stages $(PLATE_RUN) --seed 0 $(PLATE_RESUME)
	$(BIN)/python -m convert.synthetic.plate_release $(PLATE_RUN) assets/models/glmv-plates --quant Q8_0
	$(BIN)/python bench/plate_accuracy.py --count 200 --write-manifest

plate-accuracy: setup
	$(BIN)/python bench/plate_accuracy.py --count 200

# The README's screenshots (English and Chinese): the demo model reading the sample plate in Chromium.
screenshots: setup system-deps
	$(BIN)/python docs/take_screenshots.py

clean:
	rm -rf $(VENV) build dist .pytest_cache
