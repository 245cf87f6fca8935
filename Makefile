# Two commands do everything on a fresh machine (Python >= 3.10 with venv):
#   make demo   - create .venv, install, run the whole chain on the built-in generated corpus
#   make test   - create .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
# A second, device-like environment: numpy<2 + tflite-runtime + ser-edge, nothing else (see
# tests/test_runtime_device_install.py). tflite-runtime has wheels up to CPython 3.11: on a newer
# Python this step fails with pip's message, and so does `make test` (no silent skip).
DEVICE_VENV ?= .venv-device
DEVICE_STAMP := $(DEVICE_VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: demo test bench install clean system-deps firmware pi-check soak fuzz

install: $(STAMP)

# First install: ~2.8 GB on disk in $(VENV) (TensorFlow is 1.9 GB of it), a ~0.8 GB download; pip shows
# its progress. Later runs reinstall only when pyproject.toml changes. --no-cache-dir: pip's cache would
# keep a second copy of the download (~0.8 GB) that nothing here reads again; a CI machine ran out of
# disk during this step once.
PIP_INSTALL := -m pip install --no-cache-dir
$(STAMP): pyproject.toml
	@bash .ci/disk-check.sh "$(CURDIR)" 3600 "the .venv install"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) $(PIP_INSTALL) --quiet --upgrade pip
	@echo "installing ser-edge[all] into $(VENV): TensorFlow, LiteRT, TFLite Micro, librosa, matplotlib, pyserial, ..."
	@echo "  about 2.8 GB on disk after a ~0.8 GB download; a few minutes on first install"
	$(PY) $(PIP_INSTALL) --progress-bar on -e ".[all]"
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(PY) -m edge_runtime demo --out out/demo

$(DEVICE_STAMP): pyproject.toml
	test -x $(DEVICE_VENV)/bin/python || $(PYTHON) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/python $(PIP_INSTALL) --quiet "tflite-runtime>=2.14" "numpy<2" \
	  || { echo "make: no tflite-runtime wheel for $$($(PYTHON) --version) on this machine: the device-install test cannot run (use CPython <= 3.11)" >&2; exit 1; }
	$(DEVICE_VENV)/bin/python $(PIP_INSTALL) --quiet --no-deps -e .
	rm -f $(DEVICE_VENV)/.installed-* && touch $@

system-deps:
	bash .ci/system-deps.sh

test: system-deps $(STAMP) $(DEVICE_STAMP)
	SER_EDGE_FULL_ENV=1 SER_EDGE_DEVICE_PYTHON=$(abspath $(DEVICE_VENV))/bin/python \
	  $(PY) -m pytest -q -p no:cacheprovider

# The Cortex-M4 device firmware for the shipped model (needs .ci/apt-packages.txt: arm-none-eabi
# gcc + newlib); run it with `$(PY) -m edge_runtime firmware run --elf build/firmware/ser_fw.elf`.
firmware: system-deps $(STAMP)
	$(PY) -m edge_runtime firmware build --out build/firmware

bench: $(STAMP)
	$(PY) bench/frontend.py
	$(PY) bench/runtime.py
	$(PY) bench/serial_link.py
	$(PY) bench/firmware.py
	$(PY) bench/fleet.py --boost

# The device side on Debian arm64 + armhf userlands under qemu-user (needs root, debootstrap,
# qemu-user-static; the first run downloads two userlands): device tests there + bit-exact parity
# of features and int8 scores with this machine -> bench/results/pi.json. Too slow for CI.
pi-check: $(STAMP)
	@command -v debootstrap >/dev/null && test -x /usr/bin/qemu-aarch64-static || \
	  (echo "pi-check needs: sudo apt-get install debootstrap qemu-user-static" && exit 2)
	$(PY) bench/pi_check.py

# An hour of real-time audio through `serve` over a pty -> bench/results/soak.json (+ .png).
soak: $(STAMP)
	$(PY) bench/soak.py

# Fuzz frames (Python + C under ASan/UBSan), audio files and .tflite metadata -> bench/results/fuzz.json.
fuzz: $(STAMP)
	$(PY) bench/fuzz.py

clean:
	rm -rf out .pytest_cache build *.egg-info
