#!/bin/bash
# The cost of capture on one node, measured in one run: the same wrk load against the same nginx,
# once from an unmeshed cgroup ("direct") and once from a workload of a meshed namespace
# ("captured": connect() is redirected into weftd's node proxy, which dials nginx).
#
#   make bench                      REPS=3 x DUR=10 s per test, path and connection count
#   QUICK=1 make bench              1 rep x 2 s: a smoke run (CI)
#   REPS=5 DUR=10 make bench        knobs: REPS, DUR, CLOSE_CONNS=1,50, KA_CONNS=1,50,
#                                   QUIET=0.3 (busy cores counted as idle), MAX_WAIT=120 s, NICE=-20,
#                                   FOREIGN_MAX=0.15 (cores used by others during a run before it is redone)
#
# Tests: (a) "close": wrk -H 'Connection: close', a new TCP connection per request (connect, request,
# first byte); (b) "keep-alive": small requests on established connections (the L4 relay alone).
# nginx and weftd are pinned to CPU 0, wrk to CPU 1, as in shared/bench. The node is a network
# namespace with 198.18.0.1/24 on a dummy interface; nginx listens on 198.18.0.1:8080 (unmeshed).
# Output: a markdown table on stdout and in Benchmarks/capture/results/latest.md; raw wrk outputs
# under Benchmarks/capture/results/runs/<stamp>/. Everything set up here is removed on exit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WEFTD=${WEFTD:-$ROOT/.build/release/weftd}
if [ "${QUICK:-0}" = 1 ]; then REPS=1; DUR=2; fi
export REPS=${REPS:-3} DUR=${DUR:-10} QUICK=${QUICK:-0}
ADMIN_PORT=15021
BPF_ROOT=/sys/fs/bpf/weft
ID="$$-$(date +%s)"
NS="weft-bench-$ID"
NODE="bench-$ID"
WORK=$(mktemp -d /tmp/weft-bench.XXXXXX)

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (BPF, cgroups, network namespaces)"
[ -x "$WEFTD" ] || die "$WEFTD not found; run 'make bench' (it builds a release weftd first)"
for b in ip nsenter taskset nice wrk nginx python3 curl findmnt; do command -v "$b" >/dev/null || die "$b missing; run 'make deps'"; done
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (servers on CPU 0, wrk on CPU 1)"

CG2=$(findmnt -t cgroup2 -n -o TARGET | head -1)
[ -n "$CG2" ] || die "no cgroup2 mount found (findmnt -t cgroup2)"
CGROOT="$CG2/weft-bench-$ID"
CAPTURED_CG="$CGROOT/weft.slice/weft-bench.slice/wrk.service"
DIRECT_CG="$CGROOT/direct.slice/wrk.service"
SERVERS_CG="$CGROOT/servers.slice"
BPF_ROOT_EXISTED=0; [ -e "$BPF_ROOT" ] && BPF_ROOT_EXISTED=1
NICE=${NICE:--20}
PIN0=(taskset -c 0); [ "$NICE" != 0 ] && PIN0=(nice -n "$NICE" taskset -c 0)

PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for _ in $(seq 50); do
        local alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    if [ -d "$CGROOT" ]; then   # a wrk left behind by an interrupted driver
        find "$CGROOT" -depth -type d | while read -r d; do
            [ -e "$d/cgroup.kill" ] && echo 1 > "$d/cgroup.kill" 2>/dev/null
        done
    fi
    "$WEFTD" cleanup --node "$NODE" --bpf-root "$BPF_ROOT" >>"$WORK/cleanup.log" 2>&1 \
        || { echo "bench: weftd cleanup failed:"; cat "$WORK/cleanup.log"; }
    rm -rf "${BPF_ROOT:?}/$NODE" 2>/dev/null
    [ $BPF_ROOT_EXISTED = 0 ] && rmdir "$BPF_ROOT" 2>/dev/null
    if [ -d "$CGROOT" ]; then
        for _ in $(seq 50); do
            find "$CGROOT" -depth -type d -exec rmdir {} \; 2>/dev/null
            [ -d "$CGROOT" ] || break
            sleep 0.1
        done
        [ -d "$CGROOT" ] && echo "bench: could not remove $CGROOT"
    fi
    ip netns del "$NS" 2>/dev/null
    if [ $rc != 0 ] && [ $rc != 130 ] && [ -s "$WORK/weftd.log" ]; then
        echo "bench: last lines of weftd's log:"; tail -n 20 "$WORK/weftd.log" | sed 's/^/  /'
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts "$@" as the only process of cgroup $1, inside the node's netns, output to $2.
start_in() {
    local cg=$1 log=$2; shift 2
    CG="$cg" NETNS="/run/netns/$NS" sh -c 'echo $$ > "$CG/cgroup.procs" && exec nsenter --net="$NETNS" "$@"' \
        sh "$@" >"$log" 2>&1 </dev/null &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# --- the node -----------------------------------------------------------------------------------------
ip netns add "$NS"
ip -n "$NS" link set lo up
# A dummy interface carries the node's address; kernels built without dummy get a veth pair
# whose both ends stay inside the node.
ip -n "$NS" link add weft0 type dummy 2>/dev/null || {
    ip -n "$NS" link add weft0 type veth peer name weft0p && ip -n "$NS" link set weft0p up; }
ip -n "$NS" addr add 198.18.0.1/24 dev weft0
ip -n "$NS" addr add fd00:77::1/64 dev weft0 nodad
ip -n "$NS" link set weft0 up
# Per-netns: many short connections (the 'close' test) must not run out of ports.
nsenter --net="/run/netns/$NS" sysctl -q -w net.ipv4.ip_local_port_range="20000 60999" net.ipv4.tcp_tw_reuse=1
mkdir -p "$CAPTURED_CG" "$DIRECT_CG" "$SERVERS_CG/nginx.service" "$SERVERS_CG/weftd.service"

# --- nginx: one process, fixed 2-byte body (as shared/bench's backend) -----------------------------------
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 8192; use epoll; multi_accept on; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path       $WORK/nginx/proxy;
    fastcgi_temp_path     $WORK/nginx/fcgi;
    uwsgi_temp_path       $WORK/nginx/uwsgi;
    scgi_temp_path        $WORK/nginx/scgi;
    server {
        listen 198.18.0.1:8080 backlog=4096;
        location / { default_type text/plain; return 200 "ok"; }
    }
}
EOF
start_in "$SERVERS_CG/nginx.service" "$WORK/nginx.log" \
    "${PIN0[@]}" nginx -e "$WORK/nginx/error.log" -c "$WORK/nginx.conf" -p "$WORK/nginx/"
NGINX_PID=$LAST_PID

# --- weftd ---------------------------------------------------------------------------------------------
cat > "$WORK/weftd.yaml" <<EOF
node: $NODE
cgroupRoot: $CGROOT
bpfRoot: $BPF_ROOT
admin:
  address: 127.0.0.1:$ADMIN_PORT
namespaces:
  - name: bench
    mesh: true
EOF
start_in "$SERVERS_CG/weftd.service" "$WORK/weftd.log" "${PIN0[@]}" "$WEFTD" --config "$WORK/weftd.yaml" --log-level warning
WEFTD_PID=$LAST_PID

ready=0
for _ in $(seq 300); do
    kill -0 "$WEFTD_PID" 2>/dev/null || die "weftd exited: $(tail -n 30 "$WORK/weftd.log")"
    kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited: $(cat "$WORK/nginx.log" "$WORK/nginx/error.log" 2>/dev/null)"
    if [ "$(nsenter --net="/run/netns/$NS" curl -sS --max-time 2 "http://127.0.0.1:$ADMIN_PORT/healthz/ready" 2>/dev/null)" = ready ]; then
        ready=1; break
    fi
    sleep 0.2
done
[ $ready = 1 ] || die "weftd not ready after 60 s: $(tail -n 30 "$WORK/weftd.log")"

# --- measure (the driver runs inside the node's netns; it places each wrk in its cgroup) ---------------
STAMP=$(date +%Y%m%d-%H%M%S)
export RESULTS="$HERE/results" RUN_DIR="$HERE/results/runs/$STAMP" STAMP \
    CAPTURED_CG DIRECT_CG WEFTD_PID NGINX_PID NICE ADMIN="http://127.0.0.1:$ADMIN_PORT" \
    COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
mkdir -p "$RUN_DIR"
nsenter --net="/run/netns/$NS" python3 "$HERE/bench.py"
