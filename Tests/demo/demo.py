#!/usr/bin/env python3
"""Weft demo: a real mesh on this machine, in the foreground.

  make demo                 run until Ctrl-C
  make demo DURATION=30     run 30 s unattended; exit 0 only if traffic flowed over mTLS

Two nodes (network namespaces on a veth pair, each with its own weftd, cgroup root and pins),
weft-control on embedded SQLite in a temp folder, a meshed namespace `shop`:
  node a: frontend.service   a traffic generator calling http://catalog.shop.svc.cluster.local/api/products
  node b: catalog-v1.service, catalog-v2.service   HTTP servers (their own cgroups)
Services catalog, catalog-v1, catalog-v2 and an HTTPRoute sending 90% of /api to v1 and 10% to
v2. The name resolves through weftd's DNS, the request is routed by weftd on node a and crosses
to node b inside an HBONE tunnel (mutual TLS 1.3 with the workloads' SPIFFE identities).
Everything made here is removed on exit, whatever the exit.
"""
import json, os, signal, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)
from meshlab import ADDR, MeshLab  # noqa: E402

FIXTURES = os.path.join(ROOT, 'Tests', 'WeftIntegrationTests', 'Fixtures')
DURATION = os.environ.get('DURATION', '')
BUILD = os.environ.get('BUILD_DIR', os.path.join(ROOT, '.build', 'debug'))


def manifest(lab):
    a, b = lab.node_name['a'], lab.node_name['b']
    def workload(name, node, version=None, port=None):
        labels = f'{{app: catalog, version: {version}}}' if version else '{app: frontend}'
        ports = f', ports: [{{name: http, port: {port}, protocol: http}}]' if port else ''
        sa = 'catalog' if version else 'frontend'
        return f'''---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: {name}, namespace: shop, labels: {labels}}}
spec: {{node: {node}, unit: {name}.service, serviceAccount: {sa}, addresses: ["{ADDR['a' if node == a else 'b']}"]{ports}}}
'''
    def service(name, vip, selector, target=8080):
        return f'''---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec: {{selector: {selector}, virtualIP: {vip}, ports: [{{name: http, port: 80, targetPort: {target}, protocol: http}}]}}
'''
    return ('''apiVersion: weft.dev/v1alpha1
kind: Namespace
metadata: {name: shop}
spec: {mesh: {enabled: true}}
''' + workload('frontend', a) + workload('catalog-v1', b, 'v1', 8080) + workload('catalog-v2', b, 'v2', 8081)
        + service('catalog', '10.96.0.40', '{app: catalog}')
        + service('catalog-v1', '10.96.0.41', '{app: catalog, version: v1}')
        + service('catalog-v2', '10.96.0.42', '{app: catalog, version: v2}', 8081) + '''---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: catalog-canary, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: catalog, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: catalog-v1, port: 80, weight: 90}, {name: catalog-v2, port: 80, weight: 10}]
''')


# Applied once the servers answer: from then on only the mesh reaches the catalog (STRICT, in the
# kernel), and only the frontend's identity may call its API (checked by weftd on node b).
POLICIES = '''apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: catalog-readers, namespace: shop}
spec:
  selector: {matchLabels: {app: catalog}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/frontend"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/api/*"]}}]
'''


def plaintext_refused(lab):
    """A direct plaintext connect to catalog-v1 from node a, outside the mesh: STRICT drops it."""
    probe = ('import socket,sys\ns=socket.socket();s.settimeout(2)\n'
             f'try:\n s.connect(("{ADDR["b"]}",8080));print("connected")\nexcept OSError as e:print("refused",e)')
    out = lab.in_node('a', 'python3', '-c', probe, check=False).stdout
    return out.startswith('refused')


def main():
    if os.geteuid() != 0:
        raise SystemExit('demo: needs root (BPF, cgroups, network namespaces)')
    if DURATION and not DURATION.isdigit():
        raise SystemExit('demo: DURATION must be a number of seconds')
    bins = {b: os.path.join(BUILD, b) for b in ('weftd', 'weft-control', 'weftctl')}
    for path in bins.values():
        if not os.access(path, os.X_OK):
            raise SystemExit(f'demo: {path} not found; run `make demo` (it builds first)')
    logs = tempfile.mkdtemp(prefix='weft-demo-logs.')
    lab = MeshLab(ROOT, bins['weftd'], bins['weft-control'], bins['weftctl'], logs, 'demo', log_level='info')
    stop = {'now': False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    passed = False
    try:
        print('demo: two nodes, weft-control, two weftds ...', flush=True)
        lab.setup_nodes()
        lab.start_control()
        lab.apply(manifest(lab))
        # Traces: both weftds export OTLP/HTTP to a receiver on node a (10% of requests sampled).
        spans = os.path.join(logs, 'spans.jsonl')
        lab.spawn('otlpsink', 'a', ['python3', os.path.join(FIXTURES, 'otlpsink.py'), '--listen', f'{ADDR["a"]}:4318', '--out', spans])
        lab.wait_port('otlpsink', 'a', ADDR['a'], 4318)
        lab.start_weftds(extra_config=f'''telemetry:
  tracing:
    endpoint: http://{ADDR["a"]}:4318/v1/traces
    samplePercent: 10
''')
        # The catalog versions on node b, each in its unit's cgroup (where systemd would put it).
        for name, port in (('v1', 8080), ('v2', 8081)):
            lab.spawn(f'catalog-{name}', 'b', ['python3', os.path.join(FIXTURES, 'httpecho.py'), '--port', str(port), '--name', f'catalog-{name}'],
                      cgroup=lab.cgroup('b', f'weft.slice/weft-shop.slice/catalog-{name}.service'))
            lab.wait_port(f'catalog-{name}', 'b', '127.0.0.1', port)
        lab.wait_certificates({'a': ['/ns/shop/sa/frontend'], 'b': ['/ns/shop/sa/catalog']})
        lab.apply(POLICIES)
        lab.spawn('frontend', 'a', ['python3', os.path.join(HERE, 'loadgen.py'), '--url',
                                    'http://catalog.shop.svc.cluster.local/api/products', '--interval', '3'],
                  cgroup=lab.cgroup('a', 'weft.slice/weft-shop.slice/frontend.service'))
        ctl = f'nsenter --net=/run/netns/{lab.netns["b"]} {bins["weftctl"]} status --server https://{ADDR["b"]}:15443 ' \
              f'--ca-file {lab.work}/control/ca/ca.crt --token-file {lab.work}/control/admin.token'
        print(f'''
demo: the mesh is up.
  node a  netns {lab.netns["a"]}  {ADDR["a"]}  weftd {lab.node_name["a"]}   frontend.service (traffic)
  node b  netns {lab.netns["b"]}  {ADDR["b"]}  weftd {lab.node_name["b"]}   catalog-v1.service, catalog-v2.service
  canary  HTTPRoute catalog-canary: /api -> catalog-v1 90%, catalog-v2 10%
  policy  PeerAuthentication STRICT in shop (plaintext into its workloads is dropped in the kernel);
          AuthorizationPolicy catalog-readers: only sa frontend may GET /api/* on the catalog

Where to look (another shell, as root):
  {ctl}
  nsenter --net=/run/netns/{lab.netns["a"]} curl -s 127.0.0.1:15021/debug/capture     # capture, proxy, HBONE, DNS
  nsenter --net=/run/netns/{lab.netns["a"]} curl -s {ADDR["a"]}:15020/metrics | grep ^istio_requests_total   # Prometheus exporter (node b: {ADDR["b"]}:15020)
  traces (OTLP/HTTP from both weftds, one JSON line per span): {spans}
  dashboards: docs/grafana/ (see docs/observability.md)
  logs: {logs}
{"Running for " + DURATION + " s." if DURATION else "Ctrl-C to stop; everything is removed on exit."}
''', flush=True)
        start, seen, total = time.time(), 0, {'requests': 0, 'ok': 0, 'by': {}}
        while not stop['now'] and (not DURATION or time.time() - start < int(DURATION)):
            time.sleep(0.5)
            for n in ('weftd-a', 'weftd-b', 'frontend', 'catalog-v1', 'catalog-v2'):
                if not lab.alive(n):
                    raise SystemExit(f'demo: {n} exited:\n{lab.log_tail(n)}')
            lines = lab.log_tail('frontend', 100000).splitlines()
            fresh = [json.loads(l) for l in lines[seen:] if l.startswith('{')]
            seen = len(lines)
            for r in fresh:
                total['requests'] += r['requests']
                total['ok'] += r['ok']
                for k, v in r['by'].items():
                    total['by'][k] = total['by'].get(k, 0) + v['n']
                proxy = lab.admin('a').get('proxy', {})
                pairs = [p for p in proxy.get('identities', []) if p.get('path') == 'hbone']
                mtls = 'on' if pairs and proxy.get('handshakeFailures', 0) == 0 else 'NOT SEEN'
                split = ', '.join(f'{k} {v["n"]} req p99 {v["p99_ms"]} ms' for k, v in sorted(r['by'].items()))
                rate = r['requests'] / r['seconds'] if r['seconds'] else 0
                success = 100.0 * r['ok'] / r['requests'] if r['requests'] else 0
                traced = sum(1 for _ in open(spans)) if os.path.exists(spans) else 0
                print(f'[{int(time.time() - start):>3}s] {rate:6.1f} req/s  success {success:5.1f}%  {split}  '
                      f'mTLS {mtls} (HBONE streams {proxy.get("outboundStreams", 0)})  spans {traced}', flush=True)
        proxy = lab.admin('a').get('proxy', {})
        frontend, catalog = 'spiffe://cluster.local/ns/shop/sa/frontend', 'spiffe://cluster.local/ns/shop/sa/catalog'
        over_mtls = any(p.get('path') == 'hbone' and p.get('source') == frontend and p.get('destination') == catalog
                        and p.get('connections', 0) > 0 for p in proxy.get('identities', []))
        success = total['ok'] / total['requests'] if total['requests'] else 0
        strict = plaintext_refused(lab)
        passed = total['ok'] > 0 and success >= 0.99 and over_mtls and total['by'].get('catalog-v2', 0) > 0 \
            and total['by'].get('catalog-v1', 0) > total['by'].get('catalog-v2', 0) and strict
        print(f'\ndemo: {total["ok"]} of {total["requests"]} requests answered, by {total["by"]}; '
              f'frontend -> catalog over HBONE mTLS: {"yes" if over_mtls else "NO"}; '
              f'plaintext to catalog from outside the mesh: {"dropped (STRICT)" if strict else "LET THROUGH"}')
    finally:
        print('demo: cleaning up', flush=True)
        problems = lab.teardown()
        for p in problems:
            print(f'demo: {p}')
    if DURATION:
        print('demo: PASS' if passed else 'demo: FAIL: expected answered requests (99%+), both versions, v1 more than v2, '
              'frontend -> catalog over mTLS, and plaintext from outside the mesh dropped')
        sys.exit(0 if passed else 1)


if __name__ == '__main__':
    main()
