# xen-hil: `make run` runs the default profile on the virtual lab; `make test` runs the
# harness's own tests. Both install what they need first (apt packages, virtualenv).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := qemu-system-x86 qemu-utils debootstrap openipmi ipmitool grub-pc-bin \
	busybox-static cpio e2fsprogs fdisk openssh-client iproute2 iputils-ping python3-venv kmod \
	nodejs
# Debian packages npm apart from nodejs; NodeSource's nodejs has it and conflicts with it.
APT_PACKAGES += $(if $(shell command -v npm),,npm)
# Only `make test` needs these: the Allure report's offline check runs headless Chromium,
# the results database is tested on a PostgreSQL started by the tests, RFC 2217 consoles
# through a ser2net started by the tests.
TEST_APT_PACKAGES := chromium postgresql ser2net
# The Allure 3 CLI (npm package `allure`), pinned by its package-lock.json.
ALLURE := tools/allure
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup apt venv allure run test bench lint unit e2e vlab-build clean-vlab

setup: apt venv allure

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

allure: $(ALLURE)/node_modules/.installed

# Its dependencies (chokidar 5) declare Node.js >= 20.19: Debian 13's nodejs, not 12's.
# npm ci empties node_modules first, so the stamp goes only after a complete install.
$(ALLURE)/node_modules/.installed: $(ALLURE)/package-lock.json | apt
	@node -e 'const [major, minor] = process.versions.node.split(".").map(Number); process.exit(major * 100 + minor >= 2019 ? 0 : 1)' \
		|| { echo "Allure 3 needs Node.js >= 20.19, this is $$(node --version)"; exit 1; }
	cd $(ALLURE) && npm ci --no-audit --no-fund
	touch $@

vlab-build: setup
	$(BIN)/xenhil vlab build

run: setup
	$(BIN)/xenhil run

# What is too long for make test: a whole run and where its time went, the boot and
# panic figures, the end-to-end demonstrations marked `long` (lab sharing through a
# coordinator, a known issue and reproduce, RFC 2217 and SOL consoles), then a bisection.
bench: APT_PACKAGES += $(TEST_APT_PACKAGES)
bench: setup vlab-build
	$(BIN)/python bench/run_figures.py
	$(BIN)/pytest -m long tests/e2e
	$(BIN)/python bench/bisect_series.py --confirm 1
	$(BIN)/python bench/boot_and_panic.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q tests/unit

# Each part prints its time (CI's log shows where the minutes went).
time_of = start=$$(date +%s); $(2); status=$$?; \
	echo "make test: $(1) took $$(( $$(date +%s) - start )) s"; $(3)
timed = @$(call time_of,$(1),$(2),exit $$status)

# The end-to-end tests run on two virtual labs at once, each host with one vCPU of the
# two cores: labs/vlab.yaml runs the results and areas runs (one chain of installs and
# kept disks), labs/vlab-b.yaml everything else. The unit tests run beside them.
E2E_ON_VLAB := tests/e2e/test_results.py tests/e2e/test_run.py::test_run_of_every_area
E2E_ON_VLAB_B := tests/e2e --ignore=tests/e2e/test_results.py \
	--deselect=tests/e2e/test_run.py::test_run_of_every_area

# in_background(part, command, log, pid variable). A background job ignores SIGINT
# without env's reset; SIGTERM becomes SIGINT, so that pytest's fixtures clean up.
in_background = ( trap 'kill -INT $$pytest; wait $$pytest' TERM; \
	$(call time_of,$(1),env --default-signal=INT $(2) & pytest=$$!; wait $$pytest,exit $$status) \
	) > $(3) 2>&1 & $(4)=$$!

# Their output is printed when they end, after that of the end-to-end tests on vlab.
test: APT_PACKAGES += $(TEST_APT_PACKAGES)
test: setup
	$(call timed,lint and types,$(MAKE) --no-print-directory lint)
	$(call timed,virtual lab images and builds,$(BIN)/xenhil vlab build)
	@unit_log=$$(mktemp); vlab_b_log=$$(mktemp); \
	$(call in_background,unit and integration tests,$(BIN)/pytest --durations=5 tests/unit tests/integration,$$unit_log,unit); \
	$(call in_background,end-to-end tests on labs/vlab-b.yaml,XENHIL_LAB=labs/vlab-b.yaml $(BIN)/pytest -p no:cacheprovider --durations=10 -m "not long" $(E2E_ON_VLAB_B),$$vlab_b_log,vlab_b); \
	trap 'kill $$unit $$vlab_b 2>/dev/null; wait $$unit $$vlab_b; for log in $$unit_log $$vlab_b_log; do [ ! -f $$log ] || { cat $$log; rm $$log; }; done' EXIT; \
	trap 'exit 130' INT TERM; \
	echo "make test: unit and integration tests, and end-to-end tests on labs/vlab-b.yaml, started beside those on labs/vlab.yaml"; \
	$(call time_of,end-to-end tests on labs/vlab.yaml,$(BIN)/pytest --durations=10 -m "not long" $(E2E_ON_VLAB),vlab=$$status); \
	wait $$vlab_b; vlab_b_status=$$?; cat $$vlab_b_log; rm $$vlab_b_log; \
	wait $$unit; unit_status=$$?; cat $$unit_log; rm $$unit_log; \
	[ $$vlab = 0 ] && [ $$vlab_b_status = 0 ] && [ $$unit_status = 0 ]

clean-vlab: venv
	$(BIN)/xenhil vlab down
