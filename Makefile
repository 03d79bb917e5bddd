# skycache: `make demo` runs the main job in the lab; `make test` runs every test tier.
# Both install what they need first (`make setup`, idempotent).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SKYCACHE := $(VENV)/bin/skycache
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# What the lab guest runs comes from the host's root filesystem (virtme-ng shares it read-only).
APT_PACKAGES := python3-venv lvm2 dmsetup open-iscsi fio thin-provisioning-tools iproute2 iptables \
	nftables conntrack iperf3 qemu-system-x86 qemu-utils kmod udev busybox-static e2fsprogs \
	util-linux procps openssh-server openssh-client

.PHONY: setup apt venv kernel test test-unit test-lab test-labhost demo bench bench-ci bench-gate-selftest lint typecheck clean fuzz \
	notebook notebooks-refresh

setup: apt venv kernel

apt:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		echo "==> installing Debian packages"; \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES); \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# apt-get download needs current package lists; refresh them once if the first try fails.
kernel: venv
	@$(SKYCACHE) lab fetch-kernel || { $(SUDO) apt-get update -q && $(SKYCACHE) lab fetch-kernel; }

test: setup
	$(PY) tools/test_tiers.py

test-unit: venv
	$(PY) tools/test_tiers.py --tiers unit

# Run one lab test file in one boot: make test-lab LAB=tests/lab/test_foo.py
LAB ?= tests/lab
test-lab: setup
	$(PY) tools/test_tiers.py --tiers lab $(LAB)

# The host-side lab tests: `lab up` boots a lab that stays up, `lab exec` runs commands in it (and
# the lab benchmark prints `lab exec` and host CLI start times). About 2 min under TCG.
test-labhost: setup
	$(PY) tools/test_tiers.py --tiers labhost

# The long fuzz of the CLI (opt-in, not part of `make test`): FUZZ_EXAMPLES hostile cases per verb
# family (tests/unit/test_fuzz_cli.py), then the number of cases each family ran. About 60 ms a case:
# some 10 minutes per family, 1.5 hours for the nine families at 10,000 each.
FUZZ_EXAMPLES ?= 10000
FUZZ_FAMILIES := fuzz_values or fuzz_numbers or fuzz_paths or fuzz_bench or fuzz_suite or fuzz_sim or fuzz_calibrations
fuzz: venv
	@mkdir -p build
	SKYCACHE_FUZZ_PROFILE=long SKYCACHE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest \
		tests/unit/test_fuzz_cli.py -k "$(FUZZ_FAMILIES)" -p no:cacheprovider -q -s -rA 2>&1 | tee build/fuzz.log; \
		status=$${PIPESTATUS[0]}; echo "== cases per family"; grep '^fuzz: ' build/fuzz.log; exit $$status

lint: venv
	$(VENV)/bin/ruff check lib bench sim tests tools
	$(VENV)/bin/mypy lib bench sim

# The main job: the quickstart suite in the lab. Ends with the comparison table on the terminal; the
# plots and report.md are in the run directory results/quickstart/<run-id>/ (printed last). bench run
# boots the lab itself (3G, disks of 8G and 2G), runs the fio runs there and draws on the host.
demo: setup
	$(SKYCACHE) bench run scenarios/quickstart.toml --out results

# Regression benchmarks: pytest-benchmark (with the gate's replayed error rates), then the fio gate.
bench: setup
	$(PY) -m pytest tests/benchmarks --benchmark-only -q -s
	$(MAKE) bench-ci

# The fio regression gate: first a check that the gate can fail (the
# committed regressed fixture must fail it, the A/A fixture pass), then the short regression scenario
# in the lab (a few minutes: lvm-iscsi and the reference lvm-local, interleaved), gated against the
# committed baseline run on lvm-iscsi's speed relative to lvm-local in the same round, which a
# machine's speed cancels. A flagged regression is confirmed by a second new run: exit 3 only when
# both are significantly worse beyond BENCH_GATE_PCT percent (replayed on the baseline: false alarms
# 2.2% for one run, 0.5% confirmed; docs/bench.md). Exit 2 when the runs are not comparable (the lab
# kernel moved: refresh the baseline, or accept it with BENCH_ALLOW=kernel; the reference stack itself
# ran over 4x slower or faster: a machine too loaded to measure on) or compare nothing.
BENCH_BASELINE ?= results/regression/baseline
BENCH_GATE_PCT ?= 30
BENCH_REFERENCE ?= lvm-local
BENCH_ALLOW ?=
GATE_FIXTURES := tests/unit/data/bench/gate/relative
GATE_FIXTURE_BASE := $(GATE_FIXTURES)/base
GATE := --relative-to $(BENCH_REFERENCE) --fail-on-regression $(BENCH_GATE_PCT)
BENCH_RUN := $(SKYCACHE) bench run scenarios/regression.toml --out .bench-ci
BENCH_GATE = $(SKYCACHE) bench compare $(BENCH_BASELINE) .bench-ci/regression/$(1) $(GATE) \
	$(if $(BENCH_ALLOW),--allow-different $(BENCH_ALLOW))
bench-ci: setup bench-gate-selftest
	rm -rf .bench-ci/regression/ci .bench-ci/regression/ci-confirm
	$(BENCH_RUN) --run-id ci
	@if [ ! -d $(BENCH_BASELINE) ]; then \
		mkdir -p $(dir $(BENCH_BASELINE)) && cp -r .bench-ci/regression/ci $(BENCH_BASELINE) && \
		echo "bench: no baseline yet: this run is now $(BENCH_BASELINE) (commit it to gate later runs)"; \
		exit 0; fi; \
	$(call BENCH_GATE,ci); status=$$?; \
	if [ $$status -ne 3 ]; then exit $$status; fi; \
	echo "bench: regression flagged in .bench-ci/regression/ci: confirming it with a second run"; \
	$(BENCH_RUN) --run-id ci-confirm && $(call BENCH_GATE,ci-confirm)

bench-gate-selftest: venv
	@$(SKYCACHE) bench compare $(GATE_FIXTURE_BASE) $(GATE_FIXTURES)/regressed $(GATE) >/dev/null 2>&1; \
		status=$$?; if [ $$status -ne 3 ]; then \
		echo "bench: the gate did not fail on $(GATE_FIXTURES)/regressed (exit $$status, expected 3)"; exit 1; fi
	@$(SKYCACHE) bench compare $(GATE_FIXTURE_BASE) $(GATE_FIXTURES)/aa $(GATE) >/dev/null \
		|| { echo "bench: the gate failed on the A/A pair $(GATE_FIXTURES)/aa"; exit 1; }
	@echo "bench: gate self-test ok (fails on $(GATE_FIXTURES)/regressed, passes on $(GATE_FIXTURES)/aa)"

# Jupyter from the venv (jupyterlab is in the dev extras) on notebooks/; the notebooks read the
# committed runs under results/. NOTEBOOK_ARGS passes options, e.g. NOTEBOOK_ARGS="--no-browser --ip 0.0.0.0".
# Jupyter refuses to run as root unless told (--allow-root): CI and fresh lab hosts are root.
NOTEBOOK_ARGS ?=
notebook: venv
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(NOTEBOOK_ARGS)

# Re-execute notebooks/*.ipynb and save them with their outputs (commit them afterwards): the unit
# tests fail when a committed notebook's outputs differ from a fresh execution's.
notebooks-refresh: venv
	$(PY) tools/notebooks_refresh.py

clean:
	rm -rf build .pytest_cache .mypy_cache
