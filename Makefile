# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv if it is missing and install tritc into it with its test extras, at the exact
# versions of constraints.txt (the lock: what CI tested). `make lock` refreshes the lock from the
# newest releases; `make test-latest` runs the suite against them without touching the lock.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tritc-installed
LOCK   := constraints.txt
PIP    := -m pip install --quiet --disable-pip-version-check

.PHONY: demo test test-long test-random test-latest fuzz lint install lock clean hw hw-sim

# pip and setuptools first (locked too: setuptools builds the editable install, without isolation so
# that the locked one is used), then tritc and everything it and its tests need, then a consistency check.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) $(PIP) --upgrade -c $(LOCK) pip setuptools
	$(PY) $(PIP) --no-build-isolation -c $(LOCK) -e '.[test]'
	$(PY) -m pip check --disable-pip-version-check
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check tritc tests examples benchmarks

test: $(STAMP) lint
	$(PY) -m pytest -n 2 -q -m "not long" --durations=20

# The checks that take many minutes (HARDENING.md's full sizes); make test runs a reduced form of each.
test-long: $(STAMP)
	$(PY) -m pytest -n 2 -q -m long

# The property tests with fresh random examples and 20x their budget (make test is derandomised).
test-random: $(STAMP)
	HYPOTHESIS_PROFILE=random $(PY) -m pytest -n 2 -q tests/passes/test_properties.py tests/ir/test_text.py \
		tests/ir/test_ops_shape.py tests/codegen/test_packing.py

# The long fuzzing campaign (docs/FUZZING.md): FUZZ_MINUTES of random ONNX graphs against onnxruntime, then
# FUZZ_INPUT_MINUTES on each reader of untrusted bytes (IR text, artifacts, FPGA streams), with atheris when it is
# installed (pip install atheris), else tritc's own mutator. Findings go to FUZZ_OUT; a new FUZZ_SEED explores anew.
FUZZ_MINUTES       ?= 20
FUZZ_INPUT_MINUTES ?= 3
FUZZ_SEED          ?= $(shell date +%s)
FUZZ_OUT           ?= fuzz-findings
FUZZ_ENGINE        ?= $(shell $(PY) -c 'import atheris' 2>/dev/null && echo atheris || echo builtin)

fuzz: $(STAMP)
	@status=0; \
	nice -n 10 $(PY) -m tritc.fuzz --minutes $(FUZZ_MINUTES) --seed $(FUZZ_SEED) --out $(FUZZ_OUT) || status=1; \
	for t in ir-text artifact stream; do \
	  nice -n 10 $(PY) -m tritc.fuzz --target $$t --engine $(FUZZ_ENGINE) --minutes $(FUZZ_INPUT_MINUTES) \
	    --seed $(FUZZ_SEED) --out $(FUZZ_OUT) || status=1; \
	done; \
	exit $$status

# The synthesis figures of docs/HW.md ("Synthesis"): Yosys from the system packages (only this target needs it; make
# test skips its one synthesis check without it), then synth_xilinx for UltraScale+ of every component at the edge
# preset but lane_reduce (Yosys 0.23's share pass passed 8 GB on its 31 fp32 adders and comparators) and the core
# (not measured yet: make hw-sim runs its Verilog), and at the
# datacenter preset the matrix unit (15 CPU minutes, 5 GB) and the movers, whose ports the preset widens (ACT there
# is 8x edge's 5 CPU minutes, mostly reading the initial value of every byte, for an arithmetic RAM count; the
# arbiter cannot be a top there). About 35 CPU minutes in all. benchmarks/hw_synth.py --rows 1 estimates a matrix
# unit from one tree in seconds. Results: benchmarks/results/hw_synth_<preset>.json and .md.
HW_TIMEOUT ?= 7200

hw: $(STAMP)
	@command -v yosys >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "make hw: needs yosys, and there is no apt-get to install it with:" \
	    "install the yosys package with this system's package manager (any version with synth_xilinx -family xcup)"; \
	    exit 1; }; \
	  apt-get install -y yosys || { apt-get update && apt-get install -y yosys; }; }
	$(PY) benchmarks/hw_synth.py --fpga-config edge --timeout $(HW_TIMEOUT) --skip lane_reduce --skip core
	$(PY) benchmarks/hw_synth.py --fpga-config datacenter --timeout $(HW_TIMEOUT) --top matrix_unit \
		--top load_mover --top store_mover

# The core's Verilog run by Icarus Verilog through cocotb (docs/HW.md, "The core in Verilog"): iverilog from the
# system packages and the [hw] extra (cocotb, locked), then the built-in copy stream through every buffer compared
# with the Simulator's DRAM and with the same core in Amaranth's simulator (cycles of all three printed), then its
# tests. About 15 s after the installs.
hw-sim: $(STAMP)
	@command -v iverilog >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "make hw-sim: needs iverilog, and there is no apt-get to install it" \
	    "with: install Icarus Verilog (>= 11) with this system's package manager"; exit 1; }; \
	  apt-get install -y iverilog || { apt-get update && apt-get install -y iverilog; }; }
	$(PY) $(PIP) --no-build-isolation -c $(LOCK) -e '.[test,hw]'
	$(PY) -m tritc.hw.cocotb_run --amaranth copy
	$(PY) -m pytest -q tests/hw/test_cocotb.py

# The whole suite against the newest releases on the package index, in its own .venv-latest: drift
# shows here before a user meets it. The versions that differ from the lock are printed first.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python $(PIP) --upgrade pip setuptools
	.venv-latest/bin/python $(PIP) --upgrade -e '.[test]'
	@newer="$$(.venv-latest/bin/python -m pip freeze --all --exclude-editable --disable-pip-version-check \
		| grep -vxFf $(LOCK))"; \
	if [ -n "$$newer" ]; then echo "$$newer" | sed 's/^/not the locked version: /'; \
	else echo "the newest releases are the locked versions"; fi
	.venv-latest/bin/python -m pytest -n 2 -q

# Refresh the lock: install the newest releases into a scratch venv and write their exact versions.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python $(PIP) --upgrade pip setuptools
	.venv-lock/bin/python $(PIP) '.[test,hw]'
	{ echo "# The lock: exact versions of everything make installs (pip constraints). Refresh: make lock"; \
	  echo "# Written by $$(.venv-lock/bin/python --version) on $$(uname -sm)."; \
	  .venv-lock/bin/python -m pip freeze --all --exclude-editable --disable-pip-version-check \
	    | grep -Ev '^tritc( |==)'; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf .venv-lock build
	@echo "wrote $(LOCK); run make test before committing it"

clean:
	rm -rf $(VENV) .venv-latest .venv-lock build *.egg-info .pytest_cache
