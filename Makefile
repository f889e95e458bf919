# fusionwatch — a newcomer needs two targets: `make run` and `make test`.
# Both build .venv from nothing (pinned by constraints.txt) and install the Debian packages
# the tests need. Everything else is a convenience for developers.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian packages: a real browser for the review page test, Prometheus + promtool for the
# metrics/rules tests. Speech comes from the espeakng-loader wheel; PyAV bundles FFmpeg.
DEBS   := chromium chromium-driver prometheus mosquitto prometheus-alertmanager

.PHONY: run test lint test-all faults poison bench venv sysdeps lock clean help

help:            ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

run: venv        ## set up and run the whole stack on the embedded defaults (Ctrl-C stops it)
	$(BIN)/fusionwatch up

test: venv sysdeps  ## set up and run the tests: lint, the default suite, then the poison and fault-injection suites
	$(MAKE) lint
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q -m poison
	$(BIN)/python -m pytest -q -m faults

lint: venv       ## ruff (style, imports, bugbear, private access) and mypy (schemas, streamlogic, models, the monitor, profiles)
	$(BIN)/ruff check .
	$(BIN)/mypy

poison: venv sysdeps  ## the poison suite alone (every hostile record kind through a real broker and monitor)
	$(BIN)/python -m pytest -q -m poison

faults: venv sysdeps  ## the fault-injection suite alone (real processes killed, frozen, cut off)
	$(BIN)/python -m pytest -q -m faults

venv: $(STAMP)   ## create .venv and install fusionwatch with pinned dependencies

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -c constraints.txt -e '.[test]'
	touch $@

sysdeps:         ## install the Debian packages the tests need (skipped when present)
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

lock:            ## re-pin constraints.txt from the current .venv
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:           ## remove runtime state (./var); keeps .venv
	rm -rf var
