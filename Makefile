# xen-hil: `make run` runs the default profile on the virtual lab; `make test` runs the
# harness's own tests. Both install what they need first (apt packages, virtualenv).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := qemu-system-x86 qemu-utils debootstrap openipmi ipmitool grub-pc-bin \
	busybox-static cpio e2fsprogs fdisk openssh-client iproute2 iputils-ping python3-venv kmod \
	postgresql
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup apt venv run test lint unit e2e vlab-build clean-vlab

setup: apt venv

# Installs only what is missing, so a ready machine does not wait for apt.
apt:
	@missing=$$(dpkg-query -W -f='$${Package} $${db:Status-Status}\n' $(APT_PACKAGES) 2>/dev/null \
		| awk '$$2 != "installed" {print $$1}'; \
		for p in $(APT_PACKAGES); do dpkg-query -W $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

vlab-build: setup
	$(BIN)/xenhil vlab build

run: setup
	$(BIN)/xenhil run

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q tests/unit

test: setup lint vlab-build
	$(BIN)/pytest --durations=20 tests

clean-vlab: venv
	$(BIN)/xenhil vlab down
