#!/bin/bash
# Weft demo: one throwaway node on this machine, two workloads in the meshed namespace `shop`,
# and weftd capturing the frontend's connections into its node proxy.
#
#   make demo                 run until Ctrl-C
#   make demo DURATION=20     run 20 s unattended; exit 0 only if traffic flowed through the proxy
#
# The node is a network namespace of its own (a dummy interface with 198.18.0.1/24 and
# fd00:77::1/64), a cgroup folder of its own under the cgroup2 mount, and pins under
# /sys/fs/bpf/weft/<node>. Workloads sit where systemd would put them:
#   <cgroupRoot>/weft.slice/weft-shop.slice/catalog.service    HTTP server on 198.18.0.1:8080
#   <cgroupRoot>/weft.slice/weft-shop.slice/frontend.service   GET http://198.18.0.1:8080/ every 0.5 s
# Everything is removed on exit, whatever the exit. Needs root; builds nothing (make does).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WEFTD=${WEFTD:-$ROOT/.build/debug/weftd}
DURATION=${DURATION:-}
ADMIN_PORT=15021
BPF_ROOT=/sys/fs/bpf/weft
ID="$$-$(date +%s)"
NS="weft-demo-$ID"            # network namespace: the node
NODE="demo-$ID"               # weftd's node name (names the pin folder)
WORK=$(mktemp -d /tmp/weft-demo.XXXXXX)

die() { echo "demo: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (BPF, cgroups, network namespaces)"
[ -x "$WEFTD" ] || die "$WEFTD not found; run 'make demo' (it builds first)"
for b in ip nsenter python3 curl findmnt; do command -v "$b" >/dev/null || die "$b missing; run 'make deps'"; done
[[ -z "$DURATION" || "$DURATION" =~ ^[0-9]+$ ]] || die "DURATION must be a number of seconds"

CG2=$(findmnt -t cgroup2 -n -o TARGET | head -1)
[ -n "$CG2" ] || die "no cgroup2 mount found (findmnt -t cgroup2)"
CGROOT="$CG2/weft-demo-$ID"   # weftd's cgroupRoot for this node
SLICE="$CGROOT/weft.slice/weft-shop.slice"
BPF_ROOT_EXISTED=0; [ -e "$BPF_ROOT" ] && BPF_ROOT_EXISTED=1

PIDS=()                       # processes we started, stopped by PID on exit
WEFTD_PID=""
in_node() { nsenter --net="/run/netns/$NS" "$@"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    echo
    echo "demo: cleaning up"
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
    # anything left inside the workload cgroups (children of the workloads)
    if [ -d "$CGROOT" ]; then
        find "$CGROOT" -depth -type d | while read -r d; do
            [ -e "$d/cgroup.kill" ] && echo 1 > "$d/cgroup.kill" 2>/dev/null
        done
    fi
    "$WEFTD" cleanup --node "$NODE" --bpf-root "$BPF_ROOT" >>"$WORK/cleanup.log" 2>&1 \
        || { echo "demo: weftd cleanup failed:"; cat "$WORK/cleanup.log"; }
    rm -rf "${BPF_ROOT:?}/$NODE" 2>/dev/null
    [ $BPF_ROOT_EXISTED = 0 ] && rmdir "$BPF_ROOT" 2>/dev/null
    if [ -d "$CGROOT" ]; then
        for _ in $(seq 50); do
            find "$CGROOT" -depth -type d -exec rmdir {} \; 2>/dev/null
            [ -d "$CGROOT" ] || break
            sleep 0.1
        done
        [ -d "$CGROOT" ] && echo "demo: could not remove $CGROOT"
    fi
    ip netns del "$NS" 2>/dev/null
    if [ $rc != 0 ] && [ $rc != 130 ] && [ -s "$WORK/weftd.log" ]; then
        echo "demo: last lines of weftd's log:"; tail -n 20 "$WORK/weftd.log" | sed 's/^/  /'
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts "$@" as the only process of cgroup $1 (moved there before it runs anything), inside the
# node's network namespace, with its output in $2. Sets LAST_PID.
start_in() {
    local cg=$1 log=$2; shift 2
    CG="$cg" NETNS="/run/netns/$NS" sh -c 'echo $$ > "$CG/cgroup.procs" && exec nsenter --net="$NETNS" "$@"' \
        sh "$@" >"$log" 2>&1 </dev/null &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

admin() { in_node curl -sS --max-time 2 "http://127.0.0.1:$ADMIN_PORT$1"; }

# --- 1. the node: a network namespace with its own address ------------------------------------------
echo "demo: node $NODE = network namespace $NS, cgroup root $CGROOT"
ip netns add "$NS"
ip -n "$NS" link set lo up
# A dummy interface carries the node's address; kernels built without dummy get a veth pair
# whose both ends stay inside the node.
ip -n "$NS" link add weft0 type dummy 2>/dev/null || {
    ip -n "$NS" link add weft0 type veth peer name weft0p && ip -n "$NS" link set weft0p up; }
ip -n "$NS" addr add 198.18.0.1/24 dev weft0
ip -n "$NS" addr add fd00:77::1/64 dev weft0 nodad
ip -n "$NS" link set weft0 up

# --- 2. cgroups as systemd would lay them out ---------------------------------------------------------
mkdir -p "$SLICE/catalog.service" "$SLICE/frontend.service"

# --- 3. weftd's config ----------------------------------------------------------------------------------
cat > "$WORK/weftd.yaml" <<EOF
node: $NODE
cgroupRoot: $CGROOT
bpfRoot: $BPF_ROOT
reconcileIntervalMs: 500
admin:
  address: 127.0.0.1:$ADMIN_PORT
namespaces:
  - name: shop
    mesh: true
EOF

# --- 4. the catalog workload (a server: capture only touches connect(), so it serves as usual) --------
mkdir -p "$WORK/www"
echo "catalog: 3 products" > "$WORK/www/index.html"
start_in "$SLICE/catalog.service" "$WORK/catalog.log" \
    python3 -m http.server 8080 --bind 198.18.0.1 --directory "$WORK/www"
CATALOG_PID=$LAST_PID

# --- 5. weftd, inside the node's network namespace ------------------------------------------------------
# nsenter --net (not `ip netns exec`, which remounts /sys and would hide the cgroup and bpf mounts).
nsenter --net="/run/netns/$NS" "$WEFTD" --config "$WORK/weftd.yaml" --log-level info \
    >"$WORK/weftd.log" 2>&1 </dev/null &
WEFTD_PID=$!
PIDS+=("$WEFTD_PID")

echo -n "demo: waiting for weftd to be ready "
ready=0
for _ in $(seq 300); do
    kill -0 "$WEFTD_PID" 2>/dev/null || { echo; die "weftd exited; its log:$(echo; sed 's/^/  /' "$WORK/weftd.log")"; }
    kill -0 "$CATALOG_PID" 2>/dev/null || { echo; die "catalog exited: $(cat "$WORK/catalog.log")"; }
    if [ "$(admin /healthz/ready 2>/dev/null)" = ready ]; then ready=1; break; fi
    echo -n .
    sleep 0.2
done
echo
[ $ready = 1 ] || die "weftd not ready after 60 s; its log:$(echo; tail -n 30 "$WORK/weftd.log" | sed 's/^/  /')"

# --- 6. the frontend workload, started after capture is on: captured from its first connect() ----------
cat > "$WORK/frontend.py" <<'EOF'
# Fetches the catalog every 0.5 s on a new TCP connection; keeps its counters in a file.
import json, os, socket, sys, time
stats_path = sys.argv[1]
ok = failed = 0
last_error = peer = ""
while True:
    try:
        with socket.create_connection(("198.18.0.1", 8080), timeout=3) as s:
            peer = "%s:%d" % s.getpeername()[:2]   # what the application sees it is talking to
            s.sendall(b"GET / HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n")
            buf = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                buf += b
        if buf.startswith(b"HTTP/1.") and buf.split(b" ", 2)[1] == b"200":
            ok += 1
        else:
            failed += 1
            last_error = repr(buf[:60])
    except OSError as e:
        failed += 1
        last_error = f"{type(e).__name__}: {e}"
    tmp = stats_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"ok": ok, "failed": failed, "peer": peer, "lastError": last_error}, f)
    os.replace(tmp, stats_path)
    time.sleep(0.5)
EOF
start_in "$SLICE/frontend.service" "$WORK/frontend.log" python3 "$WORK/frontend.py" "$WORK/frontend.json"
FRONTEND_PID=$LAST_PID

cat <<EOF

  weftd is running on node $NODE (pid $WEFTD_PID), capturing namespace "shop".
  Admin (inside the node's network namespace):
    nsenter --net=/run/netns/$NS curl -s http://127.0.0.1:$ADMIN_PORT/healthz/ready
    nsenter --net=/run/netns/$NS curl -s http://127.0.0.1:$ADMIN_PORT/debug/capture | python3 -m json.tool
  Workload cgroups: $SLICE/{catalog,frontend}.service
  Pins:             $BPF_ROOT/$NODE/{maps,progs,links}
  weftd's log:      $WORK/weftd.log
  $( [ -n "$DURATION" ] && echo "Running for $DURATION s." || echo "Ctrl-C to stop; everything is removed on exit." )

EOF

# --- 7. watch ---------------------------------------------------------------------------------------------
# One line of figures from /debug/capture and the frontend's counters; also a verdict for DURATION runs.
status() {
    local capture
    capture=$(admin /debug/capture 2>/dev/null || true)
    CAPTURE_JSON="$capture" python3 - "$WORK/frontend.json" <<'EOF'
import json, os, sys
try:
    fe = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    fe = {"ok": 0, "failed": 0, "peer": "", "lastError": ""}
try:
    cap = json.loads(os.environ["CAPTURE_JSON"])
except ValueError:
    cap = None
if cap is None:
    print(f"requests ok={fe['ok']} failed={fe['failed']} | admin endpoint not answering")
    print("VERDICT fail")
    sys.exit()
wl = next((w for w in cap.get("workloads", []) if w.get("namespace") == "shop" and w.get("name") == "frontend.service"), None)
proxy = cap.get("proxy", {})
line = (f"requests ok={fe['ok']} failed={fe['failed']} peer={fe['peer'] or '-'} | proxy accepted={proxy.get('accepted')} "
        f"active={proxy.get('active')} | frontend captured={json.dumps(wl.get('captured')) if wl else 'not discovered'} "
        f"connections={wl.get('connections') if wl else '-'}")
if fe["failed"] and fe["lastError"]:
    line += f" | last error: {fe['lastError']}"
print(line)
good = bool(wl) and wl.get("captured") is True and (wl.get("connections") or 0) > 0 and fe["ok"] > 0 and fe["failed"] == 0
print("VERDICT " + ("pass" if good else "fail"))
EOF
}

start=$(date +%s)
verdict=fail
while :; do
    sleep 3
    kill -0 "$WEFTD_PID" 2>/dev/null || die "weftd exited; its log:$(echo; tail -n 30 "$WORK/weftd.log" | sed 's/^/  /')"
    kill -0 "$CATALOG_PID" 2>/dev/null || die "catalog exited: $(tail -n 5 "$WORK/catalog.log")"
    kill -0 "$FRONTEND_PID" 2>/dev/null || die "frontend exited: $(tail -n 5 "$WORK/frontend.log")"
    out=$(status)
    echo "[$(( $(date +%s) - start ))s] $(head -n 1 <<<"$out")"
    verdict=$(sed -n 's/^VERDICT //p' <<<"$out")
    if [ -n "$DURATION" ] && [ $(( $(date +%s) - start )) -ge "$DURATION" ]; then
        break
    fi
done

if [ "$verdict" = pass ]; then
    echo "demo: PASS: the frontend's requests went through weftd's proxy (captured, counted per workload)"
    exit 0
fi
echo "demo: FAIL: expected frontend.service captured=true, connections>0, requests ok>0 and none failed"
echo "demo: /debug/capture was:"
admin /debug/capture 2>/dev/null | python3 -m json.tool 2>/dev/null | sed 's/^/  /' || true
exit 1
