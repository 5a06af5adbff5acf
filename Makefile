# health_orthanc: `make demo` runs the demo, `make test` the whole suite.
# Both install what they need (apt, pip, npm), idempotently.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
BUILD := $(ROOT)/build
VENV := $(ROOT)/.venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PG_URI ?= postgresql://postgres@127.0.0.1:5432/
APT_PACKAGES := orthanc orthanc-dicomweb orthanc-webviewer orthanc-python chromium dcmtk
# Large archives: Orthanc's index in PostgreSQL (benchmarks/sync.py --archive).
APT_PACKAGES += orthanc-postgresql
# The imaging report to the PACS: trytond's Report.convert runs soffice
# (LibreOffice headless); the tests read the PDF back with pdftotext.
APT_PACKAGES += libreoffice-writer-nogui poppler-utils
export DEBIAN_FRONTEND := noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK := 1

include $(ROOT)/web.mk
include $(ROOT)/gtk.mk

.PHONY: help deps apt venv old-venv postgres test test-sqlite test-postgresql demo bench clean demo-check

help:
	@echo "make demo   Orthanc + GNU Health demo database + trytond with the web client"
	@echo "make demo-check  the demo, checked once in the browser, then stopped"
	@echo "make test   the whole suite (SQLite, PostgreSQL, browser, GTK client)"
	@echo "make bench  the benchmarks in benchmarks/"

deps: apt venv old-venv sao browser-deps gtk-deps

# The released health_orthanc versions (PyPI) that hospitals may upgrade
# from, one virtual environment each, for the in-place upgrade test only.
OLD_VERSIONS := 5.0.0rc3 5.0.4
OLD_STAMPS := $(foreach v,$(OLD_VERSIONS),$(BUILD)/venv-old-$(v).stamp)
old-venv: $(OLD_STAMPS)
$(BUILD)/venv-old-%.stamp:
	@mkdir -p $(BUILD)
	test -x $(BUILD)/venv-old-$*/bin/python || $(PYTHON) -m venv $(BUILD)/venv-old-$*
	$(BUILD)/venv-old-$*/bin/pip install -q "gnuhealth-orthanc==$*" requests
	@touch $@

# apt-get update only when a package is missing.
apt: $(BUILD)/apt.stamp
$(BUILD)/apt.stamp: $(ROOT)/Makefile
	@mkdir -p $(BUILD)
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	    apt-get update -qq && apt-get install -y -qq $(APT_PACKAGES); \
	fi
	@touch $@

venv: $(BUILD)/venv.stamp
$(BUILD)/venv.stamp: $(ROOT)/requirements-dev.txt $(ROOT)/setup.py
	@mkdir -p $(BUILD)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r $(ROOT)/requirements-dev.txt
	# The repository root is the module: link it where trytond finds modules.
	ln -sfn $(ROOT) "$$($(PY) -c 'import trytond.modules, os; print(os.path.dirname(trytond.modules.__file__))')/health_orthanc"
	@touch $@

# The machine's PostgreSQL: start it if it is installed but stopped.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || \
	    pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@pg_isready -h 127.0.0.1 -p 5432

test: deps postgres
	$(PY) $(ROOT)/tests/run_suite.py

test-sqlite: deps
	$(PY) $(ROOT)/tests/run_suite.py --only sqlite

test-postgresql: deps postgres
	$(PY) $(ROOT)/tests/run_suite.py --only postgresql

# Only what the demo uses: not the earlier module's environment (for the
# upgrade test) nor the browser test's packages.
# DEMO_START: when make began, for the time to first login it prints.
demo: DEMO_START := $(shell date +%s.%N)
demo: apt venv sao
	DEMO_START=$(DEMO_START) $(PY) $(ROOT)/scripts/demo.py

# The demo, checked once in the browser (Ana's chart: timeline with
# previews, the attached image), screenshots in build/test-artifacts.
demo-check: DEMO_START := $(shell date +%s.%N)
demo-check: apt venv sao browser-deps
	DEMO_START=$(DEMO_START) DEMO_CHECK=exit $(PY) $(ROOT)/scripts/demo.py

# Each benchmark's JSON is kept in benchmarks/results/ (replaced only by a
# run that finished), then the README's figure blocks are written from it.
RESULTS := $(ROOT)/benchmarks/results
bench: deps postgres
	$(PY) $(ROOT)/benchmarks/sync.py > $(RESULTS)/sync-sqlite.json.new
	mv $(RESULTS)/sync-sqlite.json.new $(RESULTS)/sync-sqlite.json
	$(PY) $(ROOT)/benchmarks/sync.py --db postgresql --archive \
	    > $(RESULTS)/sync-postgresql.json.new
	mv $(RESULTS)/sync-postgresql.json.new $(RESULTS)/sync-postgresql.json
	$(PY) $(ROOT)/benchmarks/upload.py --issue14 --repeat 5 --rpc --rpc-mb 200 \
	    > $(RESULTS)/upload-issue14.json.new
	mv $(RESULTS)/upload-issue14.json.new $(RESULTS)/upload-issue14.json
	$(PY) $(ROOT)/benchmarks/viewer_access.py \
	    > $(RESULTS)/viewer_access.json.new
	mv $(RESULTS)/viewer_access.json.new $(RESULTS)/viewer_access.json
	$(PY) $(ROOT)/benchmarks/worklist.py
	$(PY) $(ROOT)/benchmarks/readme.py

clean:
	rm -rf $(BUILD) $(VENV)
