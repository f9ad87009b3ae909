#!/usr/bin/env python3
"""The cost of telemetry on the request path, and of rendering /metrics.

Part 1 (weft-telemetry-bench, release build, in process): nanoseconds to record one request in
Istio's HTTP metrics, and /metrics render time at about 10,000 samples (204 label sets of the
HTTP families) and at 10,000 label sets (SIZES).

Part 2 (live, two nodes of Tests/demo/meshlab.py joined by a veth): wrk in a meshed workload on
node A sends HTTP/1.1 keep-alive requests to a Service with an HTTPRoute; weftd A routes each one
over HBONE to weftd B (which parses it too, as the destination proxy) and on to nginx on B. The
same traffic runs with weftd configured four ways, both nodes alike, restarted between modes:

  off       telemetry.metrics.address: off (no Istio metrics recorded), no traces, no access log
  metrics   the default: Istio's metrics recorded and exported
  tracing   metrics, and a client and a server span per request, every request sampled
            (samplePercent 100), exported over OTLP/HTTP to a receiver on node B
  all       metrics, tracing, and a JSON access log line per request at each node, to a file

weftds and nginx run on CPU 0, wrk and the OTLP receiver on CPU 1. Figures per mode: requests/s,
p50/p99, CPU microseconds per request of weftd A and B (from /proc/<pid>/stat), and the extra
µs per request over `off`. Medians with [min..max] over REPS. Output:
Benchmarks/telemetry/results/latest.md. Everything made here is removed on exit.

Environment: REPS (3), DUR (5 s), CONNS (10), QUICK=1 (1 rep x 2 s), QUIET (0.3), MAX_WAIT (60 s),
NICE (-20), WEFTD (release), WEFT_CONTROL, WEFTCTL (debug), TELEMETRY_BENCH (release binary).
"""
import json, os, platform, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, os.path.join(HERE, '..', 'lib'))
sys.path.insert(0, os.path.join(ROOT, 'Tests', 'demo'))
from benchlib import knobs, publish, quiet_wait, run_wrk, say, spread  # noqa: E402
from meshlab import ADDR, MeshLab, run  # noqa: E402

K = knobs(ROOT, dur=5, conns='10', max_wait=60)
QUICK, REPS, DUR, QUIET, MAX_WAIT, NICE = K.QUICK, K.REPS, K.DUR, K.QUIET, K.MAX_WAIT, K.NICE
CONNS = int(K.CONNS)
WEFTD, WEFT_CONTROL, WEFTCTL = K.WEFTD, K.WEFT_CONTROL, K.WEFTCTL
MICRO = os.environ.get('TELEMETRY_BENCH', f'{ROOT}/.build/release/weft-telemetry-bench')
SINK = os.path.join(ROOT, 'Tests', 'WeftIntegrationTests', 'Fixtures', 'otlpsink.py')
RESULTS = os.path.join(HERE, 'results')
VIP = '10.96.0.50'
MODES = ['off', 'metrics', 'tracing', 'all']


def mode_config(mode, work):
    if mode == 'off':
        return 'telemetry:\n  metrics:\n    address: "off"\n'
    text = 'telemetry:\n'
    if mode in ('tracing', 'all'):
        text += f'  tracing:\n    endpoint: http://{ADDR["b"]}:4318/v1/traces\n    samplePercent: 100\n'
    if mode == 'all':
        text += f'  accessLog:\n    output: {work}/access.log\n'
    return text if text != 'telemetry:\n' else ''


def main():
    if os.geteuid() != 0:
        raise SystemExit('bench: needs root (network namespaces, cgroups, eBPF)')
    for f in (WEFTD, WEFT_CONTROL, WEFTCTL, MICRO):
        if not os.access(f, os.X_OK):
            raise SystemExit(f'bench: {f} not found; `make bench-telemetry` builds it')
    stamp = time.strftime('%Y%m%d-%H%M%S')
    run_dir = os.path.join(RESULTS, 'runs', stamp)
    os.makedirs(run_dir, exist_ok=True)

    say('bench: part 1, in process (weft-telemetry-bench)')
    micro = json.loads(run(*(['taskset', '-c', '1', MICRO])).stdout.strip().split('\n')[-1])
    say(f'bench: {micro}')

    lab = MeshLab(ROOT, WEFTD, WEFT_CONTROL, WEFTCTL, run_dir, 'tbench', nice=NICE)
    res = {'runs': [], 'micro': micro}
    try:
        lab.setup_nodes()
        server_cg = lab.cgroup('b', 'weft.slice/weft-bench.slice/server.service')
        ngx = os.path.join(lab.work, 'nginx')
        for d in ('body', 'proxy', 'fcgi', 'uwsgi', 'scgi'):
            os.makedirs(f'{ngx}/{d}', exist_ok=True)
        open(f'{lab.work}/nginx.conf', 'w').write(f'''worker_processes 1;
pid {ngx}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {ngx}/body; proxy_temp_path {ngx}/proxy; fastcgi_temp_path {ngx}/fcgi;
  uwsgi_temp_path {ngx}/uwsgi; scgi_temp_path {ngx}/scgi;
  server {{ listen 8080; location / {{ return 200 "ok"; }} }}
}}
''')
        lab.spawn('nginx', 'b', ['nginx', '-e', f'{ngx}/error.log', '-c', f'{lab.work}/nginx.conf', '-p', f'{ngx}/',
                                 '-g', 'daemon off;'], cgroup=server_cg, cpu='0')
        lab.wait_port('nginx', 'b', '127.0.0.1', 8080)
        lab.spawn('otlpsink', 'b', ['python3', SINK, '--listen', f'{ADDR["b"]}:4318', '--out', '/dev/null'], cpu='1')
        lab.start_control(cpu='1')
        lab.apply(f'''apiVersion: weft.dev/v1alpha1
kind: Namespace
metadata: {{name: bench}}
spec: {{mesh: {{enabled: true}}}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: client, namespace: bench, labels: {{app: client}}}}
spec: {{node: {lab.node_name['a']}, unit: client.service, serviceAccount: client, addresses: ["{ADDR['a']}"]}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: server, namespace: bench, labels: {{app: server, version: v1}}}}
spec: {{node: {lab.node_name['b']}, unit: server.service, serviceAccount: server, addresses: ["{ADDR['b']}"],
       ports: [{{name: http, port: 8080, protocol: http}}]}}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {{name: web, namespace: bench}}
spec: {{selector: {{app: server}}, virtualIP: {VIP}, ports: [{{name: http, port: 80, targetPort: 8080, protocol: http}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: bench}}
spec:
  parentRefs: [{{group: "", kind: Service, name: web, port: 80}}]
  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]
''')
        client_cg = lab.cgroup('a', 'weft.slice/weft-bench.slice/client.service')
        os.makedirs(client_cg, exist_ok=True)

        def wrk(conns, dur, raw=None, pids=None):
            argv = lab.client_argv('a', client_cg, ['wrk', '-t1', f'-c{conns}', f'-d{dur}s', '--latency', f'http://{VIP}/'])
            try:
                return run_wrk(argv, pids or {}, dur, raw=raw, profile=tuple(pids or ()))
            except RuntimeError as e:
                raise SystemExit(f'bench: {e}')

        started = False
        for rep in range(REPS):
            order = MODES[rep % len(MODES):] + MODES[:rep % len(MODES)]
            for mode in order:
                # Both weftds restart with this mode's configuration.
                for n in ADDR:
                    p = lab.procs.get(f'weftd-{n}')
                    if p is not None and p.poll() is None:
                        p.terminate()
                        p.wait(15)
                lab.start_weftds(cpu='0', extra_config=mode_config(mode, lab.work))
                if not started:
                    lab.wait_certificates({'a': ['/ns/bench/sa/client'], 'b': ['/ns/bench/sa/server']})
                    started = True
                t0 = time.time()
                while True:
                    d = wrk(1, 1)
                    if d['requests'] > 0 and d['non2xx'] == 0 and d['sock_errors'] == 0:
                        break
                    if time.time() - t0 > 60:
                        raise SystemExit(f'bench: the route did not answer in mode {mode}: {d}')
                    time.sleep(0.5)
                wrk(CONNS, 1)
                waited, busy = quiet_wait(QUIET, MAX_WAIT)
                pids = {f'weftd-{n}': lab.procs[f'weftd-{n}'].pid for n in ADDR}
                d = wrk(CONNS, DUR, raw=f'{run_dir}/wrk_{mode}_r{rep}.txt', pids=pids)
                d.update(mode=mode, rep=rep, busy_at_start=busy, cpu_us=[d['cpu_us'][n] for n in pids])
                say(f'bench: {mode:8} rep {rep}: {d["rps"]:,.0f} req/s p99 {d["p99_ms"]:.2f} ms '
                    f'weftd CPU µs/req A {d["cpu_us"][0]:.1f} B {d["cpu_us"][1]:.1f}')
                res['runs'].append(d)
    finally:
        for problem in lab.teardown():
            say(f'bench: {problem}')

    json.dump(res, open(f'{run_dir}/results.json', 'w'), indent=1)
    publish(summarize(res), run_dir, RESULTS)


def summarize(res):
    m = res['micro']
    L = ['# Telemetry cost', '',
         f'Machine: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}; {time.strftime("%Y-%m-%d %H:%M")}.',
         '', '## In process (release build)', '',
         f'- Recording one HTTP request in Istio\'s four HTTP metric families (existing label set): '
         f'{m["record_ns_per_request"]} ns.',
         '', '| /metrics render | label sets | samples | text | median ms [min..max] |', '|---|---|---|---|---|'] + [
         f'| HTTP families | {r["label_sets"]:,} | {r["samples"]:,} | {r["bytes"] / 1e6:.1f} MB | '
         f'{r["ms_median"]} [{r["ms_min"]}..{r["ms_max"]}] over {r["renders"]} |' for r in m['render']] + [
         '', f'## On the request path (two nodes, HTTPRoute, HBONE; wrk -c{CONNS}, {DUR} s × {REPS})', '',
         '| mode | req/s | p50 ms | p99 ms | weftd A µs/req | weftd B µs/req | A+B over `off` |',
         '|---|---|---|---|---|---|---|']
    base = {r['rep']: sum(r['cpu_us']) for r in res['runs'] if r['mode'] == 'off'}
    for mode in MODES:
        rows = [r for r in res['runs'] if r['mode'] == mode]
        if not rows:
            continue
        extra = [sum(r['cpu_us']) - base[r['rep']] for r in rows if r['rep'] in base]
        L.append(f'| {mode} | {spread([r["rps"] for r in rows], "{:,.0f}")} | {spread([r["p50_ms"] for r in rows], "{:.2f}")} | '
                 f'{spread([r["p99_ms"] for r in rows], "{:.2f}")} | {spread([r["cpu_us"][0] for r in rows], "{:.1f}")} | '
                 f'{spread([r["cpu_us"][1] for r in rows], "{:.1f}")} | {spread(extra, "{:+.1f}") if mode != "off" else "-"} |')
    busy = [r for r in res['runs'] if r.get('busy_at_start') is not None]
    L.append('')
    L.append(f'{len(busy)} of {len(res["runs"])} runs started on a busy machine (after waiting {MAX_WAIT:.0f} s).'
             if busy else 'Every run started on an idle machine.')
    return '\n'.join(L) + '\n'


if __name__ == '__main__':
    main()
