# The README's two commands: `make demo` and `make test`.  Both set up first.
VENV := .venv
PY := $(VENV)/bin/python
ATTEST := $(VENV)/bin/attest

.PHONY: setup demo test lint typecheck pytest proto bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(ATTEST) sim demo

test: setup lint typecheck pytest

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

pytest:
	$(VENV)/bin/pytest -q -p no:cacheprovider

# Regenerate the committed gRPC stubs (tests/unit/test_wire_current.py checks them).
proto: setup
	$(PY) -m lightgate.wire.generate

bench: setup
	$(PY) benchmarks/quote_verify.py
	$(PY) benchmarks/attest_rpc.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
