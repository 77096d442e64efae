# postdesk: two entry points for a fresh machine, `make demo` and `make test`.
# Both create .venv on their own and install what they need (see README).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint typecheck pytest bench clean

$(STAMP): pyproject.toml scripts/bootstrap-venv
	PYTHON=$(PYTHON) scripts/bootstrap-venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,postgres]'
	touch $@

demo: $(STAMP)
	scripts/ensure-dovecot
	$(PY) -m postdesk.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	scripts/ensure-dovecot
	scripts/ensure-test-data $(PY)
	scripts/ensure-systemd
	url="$$($(PY) scripts/ensure_postgres.py)" && \
	POSTDESK_TEST_PG_URL="$$url" POSTDESK_REQUIRE_DOVECOT=1 POSTDESK_REQUIRE_PG=1 \
	POSTDESK_REQUIRE_SYSTEMD=1 \
	POSTDESK_REQUIRE_SHARED=$${POSTDESK_REQUIRE_SHARED:-0} \
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# For local runs while working: everything but the tests marked slow (crash loops, model
# training on whole corpora, the demo). CI runs `make test`, which leaves nothing out.
test-fast: PYTEST_ARGS += -m "not slow"
test-fast: lint typecheck pytest

bench: $(STAMP)
	scripts/ensure-dovecot
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache demo-run
