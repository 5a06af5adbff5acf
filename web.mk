# web.mk -- SAO 7.0 web client and browser tests for health_orthanc.
# Included from the Makefile; usable alone too: make -f web.mk sao
#
# Targets:
#   sao           install tryton-sao + the libraries its index.html loads from
#                 the npm registry (no bower, no install scripts), assemble a
#                 servable tree in $(SAO_DIR) with custom.js next to index.html
#   sao-check     every <script src>/<link href> of index.html is a file
#   browser-deps  npm deps (incl. playwright-core) + Debian chromium if missing
#   browser-unit  node:test tests of custom.js (framing, widget in chromium)
#   browser-test  tests/browser/upload.mjs against a running trytond
#                 (TRYTON_URL, TRYTON_DB, ... must be set; see that script)
#   sao-clean     remove the assembled tree and node_modules
#
# trytond serves the client with:  [web] root = $(SAO_DIR)

# Keep the including Makefile's default goal.
WEB_MK_DEFAULT_GOAL := $(.DEFAULT_GOAL)
WEB_MK_DIR := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
WEB_DIR := $(WEB_MK_DIR)/web

NPM ?= npm
NODE ?= node
NPM_FLAGS ?= --ignore-scripts --no-audit --no-fund --prefer-offline
SAO_DIR ?= $(WEB_DIR)/build/sao
override SAO_DIR := $(abspath $(SAO_DIR))
CHROMIUM ?= /usr/bin/chromium
export SAO_DIR CHROMIUM

WEB_NODE_STAMP := $(WEB_DIR)/node_modules/.health-orthanc-stamp
WEB_SAO_STAMP := $(SAO_DIR)/.health-orthanc-stamp

.PHONY: sao sao-check browser-deps browser-unit browser-test sao-clean

sao: $(WEB_SAO_STAMP)

# npm ci installs exactly package-lock.json; --ignore-scripts skips
# tryton-sao's postinstall (bower) and any browser download.
$(WEB_NODE_STAMP): $(WEB_DIR)/package.json $(WEB_DIR)/package-lock.json
	cd $(WEB_DIR) && CI=true $(NPM) ci $(NPM_FLAGS)
	touch $@

$(WEB_SAO_STAMP): $(WEB_NODE_STAMP) $(WEB_DIR)/assemble-sao.mjs
	$(NODE) $(WEB_DIR)/assemble-sao.mjs $(SAO_DIR)
	$(NODE) $(WEB_DIR)/check-sao.mjs $(SAO_DIR)
	touch $@

sao-check: $(WEB_SAO_STAMP)
	$(NODE) $(WEB_DIR)/check-sao.mjs $(SAO_DIR)

browser-deps: $(WEB_NODE_STAMP)
	@if [ ! -x $(CHROMIUM) ]; then \
	    echo "$(CHROMIUM) missing: installing Debian chromium"; \
	    apt-get update && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	fi
	@$(CHROMIUM) --version 2>/dev/null | head -n 1

browser-unit: browser-deps sao
	$(NODE) --test $(WEB_MK_DIR)/tests/browser/

browser-test: browser-deps sao
	$(NODE) $(WEB_MK_DIR)/tests/browser/upload.mjs

sao-clean:
	rm -rf $(SAO_DIR) $(WEB_DIR)/node_modules

ifeq ($(abspath $(firstword $(MAKEFILE_LIST))),$(WEB_MK_DIR)/web.mk)
.DEFAULT_GOAL := sao
else
.DEFAULT_GOAL := $(WEB_MK_DEFAULT_GOAL)
endif
