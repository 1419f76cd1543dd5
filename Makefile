# p3hw — the two commands of the README, and the ones around them.
#   make demo    installs what is missing, builds, runs the two-site demo
#   make test    installs what is missing, builds, runs the whole test suite
#   make lint    ruff + the native build with -Wall -Wextra -Werror
#   make bench   runs the benchmarks, writes bench/results.md
#   make deb     builds the Debian package into build/deb/ and runs lintian on it (docs/install.md)

VENV   := .venv
PY     := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all bootstrap build native-tests test lint bench demo clean deb

all: build

bootstrap:
	@bash packaging/bootstrap.sh

# The cffi extension, built in place (editable install): rebuilt when any C changes.
build: bootstrap
	@mkdir -p build
	@$(PY) setup.py -q build_ext --inplace >build/build_ext.log 2>&1 || { cat build/build_ext.log; exit 1; }
	@$(MAKE) -s -C native dpdk
	@$(PY) -m p3hw.fips record    # FIPS mode's integrity values: <library>.hmac (docs/fips.md)

# Native unit tests under AddressSanitizer and UBSan (native/tests/).
native-tests: bootstrap
	@$(MAKE) -s -C native test

test: build native-tests
	@$(PY) -m pytest $(PYTEST_ARGS)

lint: bootstrap
	@$(VENV)/bin/ruff check p3hw backends simulators tests bench native
	@$(MAKE) -s -C native strict

bench: build
	@bash packaging/bench-deps.sh
	@$(PY) -m p3hw.cli bench all

demo: build
	@$(PY) -m p3hw.cli demo

# The Debian package: built for Debian's own python3 by packaging/deb-build.sh through dpkg-buildpackage,
# the .deb, .buildinfo and .changes in build/deb/ (not in the parent directory); lintian must be clean.
deb: bootstrap
	@mkdir -p build/deb && rm -f build/deb/*.deb
	@echo "deb: p3hw $$(bash packaging/deb-build.sh changelog)"
	@dpkg-buildpackage -b -us -uc --changes-file=build/deb/p3hw.changes --buildinfo-file=build/deb/p3hw.buildinfo \
	    --changes-option=-ubuild/deb --buildinfo-option=-ubuild/deb >build/deb/build.log 2>&1 \
	    || { tail -40 build/deb/build.log; exit 1; }
	@lintian --fail-on warning,error build/deb/p3hw.changes
	@ls build/deb/*.deb

clean:
	rm -rf build native/build p3hw/_dataplane*.so
