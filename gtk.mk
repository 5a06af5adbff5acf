# gtk.mk -- the GNU Health GTK client for tests/gtk_run.py.
# Included from the Makefile.
#
#   gtk-deps   Debian's Xvfb and GTK 3 introspection (apt, only when one is
#              missing) and gnuhealth-client from PyPI in $(GTK_VENV), a
#              virtualenv of Debian's python3 that sees Debian's PyGObject
#              (--system-site-packages): PyGObject is not built from pip.

GTK_MK_DIR := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
GTK_VENV := $(GTK_MK_DIR)/build/venv-gtk
GTK_CLIENT := gnuhealth-client==5.0.2
GTK_APT_PACKAGES := xvfb python3 python3-venv python3-gi python3-gi-cairo \
    gir1.2-gtk-3.0
# Debian's interpreter, the one python3-gi is built for.
GTK_SYSTEM_PYTHON := /usr/bin/python3

.PHONY: gtk-deps

gtk-deps: $(GTK_VENV)/.health-orthanc-stamp

$(GTK_VENV)/.health-orthanc-stamp: $(GTK_MK_DIR)/gtk.mk
	@if ! dpkg -s $(GTK_APT_PACKAGES) >/dev/null 2>&1; then \
	    apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        $(GTK_APT_PACKAGES); \
	fi
	test -x $(GTK_VENV)/bin/python || \
	    $(GTK_SYSTEM_PYTHON) -m venv --system-site-packages $(GTK_VENV)
	$(GTK_VENV)/bin/python -m pip install -q "$(GTK_CLIENT)"
	# What the client loads, short of a display (its windows need one).
	$(GTK_VENV)/bin/python -c "import gi; gi.require_version('Gtk', '3.0'); \
	    from gi.repository import Gtk; import cairo, dateutil, gnuhealth"
	touch $@
