"""A throwaway Weft mesh on this machine: nodes made of network namespaces joined by a veth
pair (node a 198.18.2.1, node b 198.18.2.2), a weft-control on node b, and one weftd per node
with its own cgroup root and pin folder, joined with one-time tokens. Used by `make demo`
(Tests/demo/demo.py) and `make bench-hbone` (Benchmarks/hbone/bench.py).

Every process is started by `spawn` (in a node's netns, optionally inside a cgroup it joins
before exec, optionally pinned to a CPU) and stopped by `teardown`, which also runs
`weftd cleanup` for each node and removes the cgroups, namespaces and work folder: call it
in a `finally`.
"""
import json, os, shutil, signal, subprocess, tempfile, time

ADDR = {'a': '198.18.2.1', 'b': '198.18.2.2'}


def run(*argv, check=True, **kw):
    r = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise SystemExit(f'{" ".join(argv)} failed ({r.returncode}):\n{r.stdout}{r.stderr}')
    return r


class MeshLab:
    def __init__(self, root, weftd, weft_control, weftctl, log_dir, tag, nice='0', log_level='warning'):
        self.root, self.weftd, self.weft_control, self.weftctl = root, weftd, weft_control, weftctl
        self.log_dir, self.nice, self.log_level = log_dir, nice, log_level
        self.id = f'{os.getpid() % 100000}'
        self.tag = tag
        self.netns = {n: f'w{tag[0]}-{n}-{self.id}' for n in ADDR}
        self.node_name = {n: f'{tag}-{n}-{self.id}' for n in ADDR}
        self.work = tempfile.mkdtemp(prefix=f'weft-{tag}.')
        self.procs = {}
        # How weftd is started (its path first); a benchmark may put a tool in front (valgrind).
        # `weftd cleanup` always runs self.weftd itself.
        self.weftd_launch = [weftd]
        self.created_netns = []
        cg2 = run('findmnt', '-t', 'cgroup2', '-n', '-o', 'TARGET').stdout.split('\n')[0].strip()
        if not cg2:
            raise SystemExit('no cgroup2 mount (findmnt -t cgroup2)')
        self.cgroot = f'{cg2}/weft-{tag}-{self.id}'
        os.makedirs(log_dir, exist_ok=True)

    # --- processes ------------------------------------------------------------------------------
    def pin(self, cpu):
        if cpu is None:
            return []
        return (['nice', '-n', self.nice] if self.nice != '0' else []) + ['taskset', '-c', cpu]

    def client_argv(self, node, cgroup, argv, cpu='1'):
        """argv as a client: in `cgroup` (a meshed workload's, or one outside the mesh), in node's
        netns, pinned to `cpu`; run to completion by the caller."""
        return ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup,
                'nsenter', f'--net=/run/netns/{self.netns[node]}'] + self.pin(cpu) + argv

    def spawn(self, name, node, argv, cgroup=None, cpu=None):
        """argv inside node's netns (and cgroup), output to <log_dir>/<name>.log. The pid is the
        program's own: sh, nsenter, nice and taskset all exec."""
        inner = ['nsenter', f'--net=/run/netns/{self.netns[node]}'] + self.pin(cpu) + argv
        if cgroup:
            os.makedirs(cgroup, exist_ok=True)
            inner = ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup] + inner
        log = open(os.path.join(self.log_dir, f'{name}.log'), 'w')
        p = subprocess.Popen(inner, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[name] = p
        return p

    def log_tail(self, name, n=3000):
        try:
            return open(os.path.join(self.log_dir, f'{name}.log')).read()[-n:]
        except OSError:
            return ''

    def alive(self, name):
        return self.procs[name].poll() is None

    def wait_port(self, name, node, host, port, timeout=30):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if not self.alive(name):
                raise SystemExit(f'{name} exited ({self.procs[name].returncode}):\n{self.log_tail(name)}')
            r = subprocess.run(['nsenter', f'--net=/run/netns/{self.netns[node]}', 'python3', '-c',
                                f'import socket; socket.create_connection(("{host}", {port}), 0.3)'], capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise SystemExit(f'{name} did not open {host}:{port} in {timeout} s')

    def in_node(self, node, *argv, **kw):
        return run('nsenter', f'--net=/run/netns/{self.netns[node]}', *argv, **kw)

    def cgroup(self, node, path):
        """A cgroup under node's root, made as systemd would."""
        full = f'{self.cgroot}/{node}/{path}'
        os.makedirs(full, exist_ok=True)
        return full

    # --- the mesh -------------------------------------------------------------------------------
    def setup_nodes(self):
        for n, ns in self.netns.items():
            run('ip', 'netns', 'add', ns)
            self.created_netns.append(ns)
            run('ip', '-n', ns, 'link', 'set', 'lo', 'up')
            self.in_node(n, 'sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=20000 60999', 'net.ipv4.tcp_tw_reuse=1')
        run('ip', '-n', self.netns['a'], 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', self.netns['b'])
        for n, addr in ADDR.items():
            run('ip', '-n', self.netns[n], 'addr', 'add', f'{addr}/24', 'dev', 'eth0')
            run('ip', '-n', self.netns[n], 'link', 'set', 'eth0', 'up')
        os.makedirs(self.cgroot)

    def weftctl_cmd(self, *args, check=True):
        return self.in_node('b', self.weftctl, *args, '--server', f'https://{ADDR["b"]}:15443',
                            '--ca-file', f'{self.work}/control/ca/ca.crt',
                            '--token-file', f'{self.work}/control/admin.token', check=check)

    def start_control(self, cpu=None, extra=()):
        self.spawn('weft-control', 'b', [self.weft_control, '--data-dir', f'{self.work}/control',
                                         '--listen', f'{ADDR["b"]}:15443', '--log-level', self.log_level, *extra], cpu=cpu)
        t0 = time.time()
        while not (os.path.exists(f'{self.work}/control/admin.token') and self.weftctl_cmd('version', check=False).returncode == 0):
            if not self.alive('weft-control'):
                raise SystemExit(f'weft-control exited:\n{self.log_tail("weft-control")}')
            if time.time() - t0 > 30:
                raise SystemExit('weft-control did not start in 30 s')
            time.sleep(0.2)

    def apply(self, manifest):
        path = f'{self.work}/manifest-{time.time_ns()}.yaml'
        open(path, 'w').write(manifest)
        self.weftctl_cmd('apply', '-f', path)

    def start_weftds(self, cpu=None, extra_config='', nodes=None):
        for n in nodes or ADDR:
            token = self.weftctl_cmd('node', 'token', 'create').stdout.strip()
            tf = f'{self.work}/token-{n}'
            open(tf, 'w').write(token + '\n')
            os.chmod(tf, 0o600)
            open(f'{self.work}/weftd-{n}.yaml', 'w').write(f'''node: {self.node_name[n]}
cgroupRoot: {self.cgroot}/{n}
bpfRoot: /sys/fs/bpf/weft
admin:
  address: 127.0.0.1:15021
control:
  server: https://{ADDR["b"]}:15443
  caFile: {self.work}/control/ca/ca.crt
  tokenFile: {tf}
  stateDir: {self.work}/state-{n}
''' + extra_config)
            self.spawn(f'weftd-{n}', n, [*self.weftd_launch, '--config', f'{self.work}/weftd-{n}.yaml', '--log-level', self.log_level],
                       cgroup=self.cgroup(n, 'servers.slice/weftd.service'), cpu=cpu)

    def wait_certificates(self, wanted, timeout=60):
        """wanted: {node: [service-account suffix like '/ns/shop/sa/frontend']}"""
        t0 = time.time()
        while True:
            status = json.loads(self.weftctl_cmd('status', '-o', 'json').stdout)
            certs = {x['name']: [c['spiffeID'] for c in x.get('certificates') or []] for x in status.get('nodes', [])}
            if all(any(c.endswith(s) for c in certs.get(self.node_name[n], [])) for n, sas in wanted.items() for s in sas):
                return
            for n in ADDR:
                if not self.alive(f'weftd-{n}'):
                    raise SystemExit(f'weftd on node {n} exited:\n{self.log_tail(f"weftd-{n}")}')
            if time.time() - t0 > timeout:
                raise SystemExit(f'nodes did not get their workload certificates in {timeout} s: {certs}')
            time.sleep(0.3)

    def admin(self, node, path='/debug/capture'):
        r = self.in_node(node, 'curl', '-s', '--max-time', '3', f'http://127.0.0.1:15021{path}', check=False)
        try:
            return json.loads(r.stdout or '{}')
        except ValueError:
            return {}

    # --- teardown -------------------------------------------------------------------------------
    def teardown(self):
        for p in reversed(list(self.procs.values())):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        problems = []
        for n in ADDR:
            r = subprocess.run([self.weftd, 'cleanup', '--node', self.node_name[n], '--bpf-root', '/sys/fs/bpf/weft'],
                               capture_output=True, text=True)
            if r.returncode != 0:
                problems.append(f'weftd cleanup of node {n}: {r.stdout}{r.stderr}')
        if os.path.isdir(self.cgroot):
            dirs = sorted((d for d, _, _ in os.walk(self.cgroot)), key=lambda d: -d.count('/'))
            for d in dirs:
                try:
                    open(f'{d}/cgroup.kill', 'w').write('1')
                except OSError:
                    pass
            for _ in range(50):
                for d in sorted((d for d, _, _ in os.walk(self.cgroot)), key=lambda d: -d.count('/')):
                    try:
                        os.rmdir(d)
                    except OSError:
                        pass
                if not os.path.isdir(self.cgroot):
                    break
                time.sleep(0.1)
            if os.path.isdir(self.cgroot):
                problems.append(f'could not remove {self.cgroot}')
        for ns in self.created_netns:
            subprocess.run(['ip', 'netns', 'del', ns], capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)
        return problems
