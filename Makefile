# The README's two commands: `make demo` and `make test`.  Both set up first.
VENV := .venv
PY := $(VENV)/bin/python
ATTEST := $(VENV)/bin/attest

.PHONY: setup demo test lint typecheck policy-test pytest proto fixtures fixtures-real bench fuzz clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(ATTEST) sim demo

test: setup lint typecheck policy-test pytest

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

# The Rego unit tests of the appraisal policy (policies/**/*_test.rego).
policy-test:
	$(ATTEST) policy test policies

pytest:
	$(VENV)/bin/pytest -q -p no:cacheprovider

# Regenerate the committed gRPC stubs (tests/unit/test_wire_current.py checks them).
proto: setup
	$(PY) -m lightgate.wire.generate

# Rebuild firmware-fixtures/*.bin from firmware-fixtures/boots/*.yaml (a unit test checks them).
fixtures: setup
	$(PY) -m lightgate.sim.firmware

# Record real measured boots into firmware-fixtures/recorded/{sb-on,sb-off}/: Debian 12's
# OVMF, shim, grub and cloud kernel (downloaded into .cache/realboot, not installed) booted
# under QEMU with swtpm; tests/unit/lightgate/test_recorded_boots.py checks them.
fixtures-real: setup
	$(PY) -m lightgate.sim.realboot.record --out firmware-fixtures/recorded

bench: setup
	$(PY) benchmarks/quote_verify.py
	$(PY) benchmarks/attest_rpc.py
	$(PY) benchmarks/eventlog.py
	$(PY) benchmarks/appraisal.py

# Fuzz the event-log parser and replay (fuzz/README.md) for FUZZ_SECONDS, seeded with
# the shared firmware logs when they are there.  New inputs and any crash-* file go to
# FUZZ_DIR, outside the repo.
ATHERIS := atheris==3.0.0
FUZZ_SECONDS ?= 60
FUZZ_LOGS ?= ../shared/firmware-logs
FUZZ_DIR ?= /tmp/lightgate-fuzz

fuzz:
	@$(PY) -c "import atheris" 2>/dev/null || $(VENV)/bin/pip install '$(ATHERIS)'
	@mkdir -p $(FUZZ_DIR)/corpus
	$(PY) fuzz/eventlog_fuzz.py $(if $(wildcard $(FUZZ_LOGS)/*.bin),-seed_dir=$(FUZZ_LOGS)) \
		-max_total_time=$(FUZZ_SECONDS) -max_len=65536 -artifact_prefix=$(FUZZ_DIR)/ \
		$(FUZZ_DIR)/corpus

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
