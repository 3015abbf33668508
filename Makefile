# hcsshim for Python: the two commands are `make demo` and `make test`; both run `make setup` first.
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
VPY := $(VENV)/bin/python
# Debian packages the project runs on (real components) and builds with.
DEB_PACKAGES := containerd runc busybox-static e2fsprogs cryptsetup-bin qemu-system-x86 cpio python3-venv python3-dev iproute2 util-linux procps gcc libc6-dev
PROTO_SRC := $(shell find src/hcsshim/api -name '*.proto' 2>/dev/null)

.PHONY: all setup deb venv bootfiles containerds test unit integration demo bench proto lint clean

# The guest boot files (upstream's `make all`): BASE=rootfs.tar[.gz]|.cpio[.gz], default: Debian packages.
BASE ?=
all: setup
	$(VPY) -m hcsshim.cmd.bootfiles build $(if $(BASE),--base $(BASE)) --out out

setup: deb venv bootfiles containerds

# containerd 1.7.x and 2.x for the test matrix (tests/integration/test_containerd_matrix.py): Debian's newer
# packages through a private apt state, unpacked under build/containerd; no network when they are there. Offline,
# the message says what is missing and how to get it, setup goes on, and the matrix tests fail naming it.
containerds: venv
	@$(VPY) -m hcsshim.testing.containerds fetch || { rc=$$?; [ $$rc -eq 1 ] || exit $$rc; \
	    echo "setup: containerd matrix incomplete (see above); its tests will fail"; }

# The default guest boot files, where the shim looks without BootFilesRootPath (<venv>/share/hcsshim/LinuxBootFiles);
# rebuilt only when the guest's sources changed.
bootfiles: deb venv
	$(VPY) -m hcsshim.cmd.bootfiles install

# Install only what is missing: a second run costs one dpkg-query.
deb:
	@missing=$$(for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "setup: installing Debian packages:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VENV)/.stamp

$(VENV)/.stamp: pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -e '.[test]'
	$(VPY) -m compileall -q src >/dev/null
	@touch $@

test: setup
	$(VENV)/bin/ruff check .
	$(VPY) -m pytest -q

unit: setup
	$(VPY) -m pytest -q tests/unit

integration: setup
	$(VPY) -m pytest -q tests/integration

demo: setup
	$(VPY) -m hcsshim.testing.demo

# Every benchmark, each side by side with its anchor; `make bench-shim` etc. run one.
BENCHES := shim ext4 bridge uvm lcow template
bench: setup
	@set -e; for b in $(BENCHES); do if [ -f bench/$$b.py ]; then echo "== bench/$$b.py"; $(VPY) bench/$$b.py; fi; done

bench-%: setup
	$(VPY) bench/$*.py

# Regenerate the checked-in protobuf modules from the .proto files (tests/unit/test_proto_generated.py
# fails when they are stale).
proto: venv
	$(VPY) tools/genproto.py

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build out .pytest_cache .ruff_cache
