#!/usr/bin/env python3
"""Driver of Benchmarks/capture/run.sh (which sets up the node and runs this inside its netns).

For each rep, test and connection count it runs wrk twice, direct and captured, in alternating
order, each time after the machine is idle. Figures per run: requests/s, p50/p99 latency, CPU
microseconds per request of weftd and of nginx (utime+stime from /proc/<pid>/stat, all threads),
and how many connections weftd's proxy accepted (from /debug/capture): a captured run must have
gone through the proxy and a direct run must not, or the run fails. A run during which other
processes used more than FOREIGN_MAX cores is redone once.

Environment (set by run.sh): REPS, DUR, QUICK, CAPTURED_CG, DIRECT_CG, WEFTD_PID, NGINX_PID, ADMIN,
RESULTS, RUN_DIR, STAMP, COMMIT; knobs CLOSE_CONNS, KA_CONNS, QUIET, MAX_WAIT, FOREIGN_MAX, NICE.
"""
import json, os, platform, resource, signal, subprocess, sys, time, urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from benchlib import TCK, busy_cores, cpu_s, cpu_snap, med, parse_wrk, publish, say, spread  # noqa: E402
from benchlib import quiet_wait as _quiet_wait  # noqa: E402

REPS = int(os.environ.get('REPS', '3'))
DUR = int(os.environ.get('DUR', '10'))
QUICK = os.environ.get('QUICK') == '1'
CLOSE_CONNS = [int(c) for c in os.environ.get('CLOSE_CONNS', '1,50').split(',') if c]
KA_CONNS = [int(c) for c in os.environ.get('KA_CONNS', '1,50').split(',') if c]
QUIET = float(os.environ.get('QUIET', '0.3'))            # busy cores below which the machine is idle
MAX_WAIT = float(os.environ.get('MAX_WAIT', '5' if QUICK else '120'))
NICE = os.environ.get('NICE', '-20')
FOREIGN_MAX = float(os.environ.get('FOREIGN_MAX', '0.15'))  # other processes' cores during a run before it is redone
CGROUPS = {'direct': os.environ.get('DIRECT_CG'), 'captured': os.environ.get('CAPTURED_CG')}
PIDS = {'weftd': int(os.environ.get('WEFTD_PID', '0')), 'nginx': int(os.environ.get('NGINX_PID', '0'))}
ADMIN = os.environ.get('ADMIN')
RESULTS = os.environ.get('RESULTS', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results'))
RUN_DIR = os.environ.get('RUN_DIR')
URL = 'http://198.18.0.1:8080/'

TESTS = [('close', c) for c in CLOSE_CONNS] + [('keep-alive', c) for c in KA_CONNS]
TEST_TITLE = {'close': 'connect + first byte (Connection: close)', 'keep-alive': 'keep-alive requests'}


def _term(signum, frame):
    raise SystemExit(f'signal {signum}')


signal.signal(signal.SIGTERM, _term)


def quiet_wait():
    return _quiet_wait(QUIET, MAX_WAIT)


def capture_state():
    with urllib.request.urlopen(f'{ADMIN}/debug/capture', timeout=5) as r:
        return json.loads(r.read())


def workload(state, name='wrk.service'):
    return next((w for w in state.get('workloads', []) if w.get('namespace') == 'bench' and w.get('name') == name), None)


def wrk_argv(path, test, conns, dur):
    """wrk pinned to CPU 1, moved into the path's cgroup before it runs."""
    pin = (['nice', '-n', NICE] if NICE != '0' else []) + ['taskset', '-c', '1']
    args = ['wrk', '-t1', f'-c{conns}', f'-d{dur}s', '--latency']
    if test == 'close':
        args += ['-H', 'Connection: close']
    return ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', CGROUPS[path]] + pin + args + [URL]


def run_once(path, test, conns, dur, raw=None):
    argv = wrk_argv(path, test, conns, dur)
    s0 = capture_state()
    c0 = {n: cpu_s(p) for n, p in PIDS.items()}
    ru0c, ru0s = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    j0, t0 = cpu_snap(), time.time()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=dur + 60)
    j1, wall = cpu_snap(), time.time() - t0
    ru1c, ru1s = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    c1 = {n: cpu_s(p) for n, p in PIDS.items()}
    s1 = capture_state()
    if raw:
        open(raw, 'w').write(' '.join(argv) + '\n' + r.stdout + r.stderr)
    if r.returncode != 0 or 'Requests/sec' not in r.stdout:
        raise SystemExit(f'wrk failed ({path}, {test}, c={conns}): rc={r.returncode}\n{r.stdout}{r.stderr}')
    d = parse_wrk(r.stdout)
    d['proxied'] = s1['proxy']['accepted'] - s0['proxy']['accepted']
    w0, w1 = workload(s0), workload(s1)
    d['workload_connections'] = (w1 or {}).get('connections', 0) - (w0 or {}).get('connections', 0)
    d['captured_flag'] = (w1 or {}).get('captured')
    d['upstream_failures'] = s1['proxy'].get('upstreamConnectFailures', 0) - s0['proxy'].get('upstreamConnectFailures', 0)
    d['cpu_us_per_req'] = {n: (c1[n] - c0[n]) / d['requests'] * 1e6 if d['requests'] else float('nan') for n in PIDS}
    # CPU used by anything but nginx, weftd, wrk and this driver during the run, in cores: a busy
    # neighbour (a build on the other core) disturbs the figures.
    busy = ((j1[0] - j0[0]) - (j1[1] - j0[1])) / TCK
    ours = sum(c1[n] - c0[n] for n in PIDS) \
        + (ru1c.ru_utime + ru1c.ru_stime) - (ru0c.ru_utime + ru0c.ru_stime) \
        + (ru1s.ru_utime + ru1s.ru_stime) - (ru0s.ru_utime + ru0s.ru_stime)
    d['foreign_cores'] = round(max(0.0, busy - ours) / wall, 3)
    return d


def measured(path, test, conns, dur, raw):
    """One run after waiting for an idle machine; redone once if other processes took CPU during it
    (the less disturbed of the two is kept)."""
    best = None
    for attempt in range(2):
        waited, busy = quiet_wait()
        d = run_once(path, test, conns, dur, raw=raw)
        d.update(waited_s=waited, busy_at_start=busy, attempts=attempt + 1)
        if best is None or d['foreign_cores'] < best['foreign_cores']:
            best = d
        if d['foreign_cores'] <= FOREIGN_MAX:
            break
        say(f'  run disturbed: other processes used {d["foreign_cores"]:.2f} cores' + ('; redoing it' if attempt == 0 else '; keeping the less disturbed try'))
    return best


def check(path, d, test, conns):
    """A captured run must have gone through the proxy; a direct one must not have."""
    if path == 'captured':
        if d['proxied'] <= 0 or d['workload_connections'] <= 0:
            return f'captured run was not proxied (proxy accepted {d["proxied"]}, workload connections {d["workload_connections"]})'
        if d['captured_flag'] is not True:
            return f'wrk.service not reported captured ({d["captured_flag"]})'
    elif d['proxied'] != 0:
        return f'direct run went through the proxy ({d["proxied"]} connections)'
    if d['requests'] == 0:
        return 'no request completed'
    return None


def summarize(res):
    max_wait, foreign_max = res.get('max_wait', MAX_WAIT), res.get('foreign_max', FOREIGN_MAX)
    L = [f'# Cost of capture on one node ({res["stamp"]})', '']
    L.append(f'Commit `{res["commit"]}`, kernel {platform.release()}, {os.cpu_count()} CPUs; '
             f'{res["reps"]} rep(s) x {res["dur"]} s per row{" (QUICK smoke run: not for comparison)" if res["quick"] else ""}. '
             'nginx (one process, 2-byte body) and weftd (release build) on CPU 0, wrk (1 thread) on CPU 1; '
             f'direct and captured runs alternate within each rep, each after waiting (at most {max_wait:.0f} s) for an idle machine. '
             'Medians with [min..max] over reps.')
    L.append('')
    L.append('"direct": wrk in an unmeshed cgroup. "captured": wrk in `weft.slice/weft-bench.slice/wrk.service`, its '
             'connect() redirected to weftd\'s proxy, which dials nginx. "close": `-H \'Connection: close\'`, a new TCP '
             'connection per request. wrk starts its latency clock when it writes the request, after connect() '
             'returned; at 1 connection, 1/(req/s) is the whole connect-request-response-close cycle.')
    L.append('')
    L.append('| test | conns | path | req/s | p50 ms | p99 ms | weftd CPU µs/req | nginx CPU µs/req | proxied conns/run | errors |')
    L.append('|---|---|---|---|---|---|---|---|---|---|')
    for test, conns in TESTS:
        for path in ('direct', 'captured'):
            rows = [r for r in res['runs'] if r['test'] == test and r['conns'] == conns and r['path'] == path]
            if not rows:
                continue
            errs = sum(r['sock_errors'] + r['non2xx'] for r in rows)
            L.append(f'| {test} | {conns} | {path} | {spread([r["rps"] for r in rows], "{:,.0f}")} | '
                     f'{spread([r["p50_ms"] for r in rows], "{:.3f}")} | {spread([r["p99_ms"] for r in rows], "{:.3f}")} | '
                     f'{spread([r["cpu_us_per_req"]["weftd"] for r in rows], "{:.1f}")} | '
                     f'{spread([r["cpu_us_per_req"]["nginx"] for r in rows], "{:.1f}")} | '
                     f'{med([r["proxied"] for r in rows]):,.0f} | {errs} |')
    L.append('')
    L.append('Captured / direct, taken pair by pair within each rep (median [min..max]):')
    L.append('')
    L.append('| test | conns | req/s ratio | p50 ratio | p99 ratio | weftd CPU µs/req (captured) |')
    L.append('|---|---|---|---|---|---|')
    for test, conns in TESTS:
        ratios = {'rps': [], 'p50_ms': [], 'p99_ms': []}
        us = []
        for rep in range(res['reps']):
            pair = {r['path']: r for r in res['runs'] if r['test'] == test and r['conns'] == conns and r['rep'] == rep}
            if len(pair) != 2:
                continue
            for k in ratios:
                if pair['direct'][k] > 0:
                    ratios[k].append(pair['captured'][k] / pair['direct'][k])
            us.append(pair['captured']['cpu_us_per_req']['weftd'])
        if not us:
            continue
        L.append(f'| {test} | {conns} | {spread(ratios["rps"], "{:.2f}")} | {spread(ratios["p50_ms"], "{:.2f}")} | '
                 f'{spread(ratios["p99_ms"], "{:.2f}")} | {spread(us, "{:.1f}")} |')
    busy = [r for r in res['runs'] if r.get('busy_at_start') is not None or r.get('foreign_cores', 0) > foreign_max]
    L.append('')
    if busy:
        L.append(f'**{len(busy)} of {len(res["runs"])} runs were disturbed** by other processes (busy at the start after '
                 f'waiting {max_wait:.0f} s, or more than {foreign_max} cores used by others during the run, even after one '
                 f'redo): ' + ', '.join(f'{r["test"]} c={r["conns"]} {r["path"]} rep {r["rep"]} '
                                        + (f'({r["foreign_cores"]:.2f} cores during the run)' if 'foreign_cores' in r else '(busy at the start)')
                                        for r in busy) + '.')
    else:
        L.append(f'Every run: idle machine at the start, at most {foreign_max} cores used by other processes during it.')
    if res['problems']:
        L.append('')
        L.append('Problems:')
        L.append('')
        L += [f'- {p}' for p in res['problems']]
    return '\n'.join(L) + '\n'


def main():
    res = {'stamp': os.environ.get('STAMP', time.strftime('%Y%m%d-%H%M%S')), 'commit': os.environ.get('COMMIT', 'none'),
           'reps': REPS, 'dur': DUR, 'quick': QUICK, 'max_wait': MAX_WAIT, 'foreign_max': FOREIGN_MAX,
           'runs': [], 'problems': []}
    say(f'bench: {REPS} rep(s) x {DUR} s; tests {TESTS}; raw output in {RUN_DIR}')

    # Smoke check before measuring: both paths answer, only the captured one through the proxy.
    for path in ('direct', 'captured'):
        d = run_once(path, 'close', 1, 1)
        problem = check(path, d, 'close', 1)
        say(f'check {path:8}: {d["requests"]} requests, proxied {d["proxied"]}, errors {d["sock_errors"] + d["non2xx"]}'
            + (f' -- {problem}' if problem else ''))
        if problem:
            raise SystemExit(f'bench: check failed: {problem}')
    if not QUICK:   # warm-up (the JIT-free binaries still warm caches and the proxy's pools)
        for path in ('direct', 'captured'):
            run_once(path, 'keep-alive', 50, 3)

    try:
        for rep in range(REPS):
            for test, conns in TESTS:
                order = ('direct', 'captured') if (rep + len(res['runs']) // 2) % 2 == 0 else ('captured', 'direct')
                for path in order:
                    d = measured(path, test, conns, DUR, raw=f'{RUN_DIR}/wrk_{test}_c{conns}_{path}_r{rep}.txt')
                    d.update(test=test, conns=conns, path=path, rep=rep)
                    waited = d['waited_s']
                    res['runs'].append(d)
                    problem = check(path, d, test, conns)
                    if problem:
                        res['problems'].append(f'rep {rep} {test} c={conns} {path}: {problem}')
                    if d['sock_errors'] or d['non2xx'] or d['upstream_failures']:
                        res['problems'].append(f'rep {rep} {test} c={conns} {path}: {d["sock_errors"]} socket errors, '
                                               f'{d["non2xx"]} non-2xx, {d["upstream_failures"]} proxy upstream failures')
                    say(f'rep{rep} {test:10} c={conns:<3} {path:8} rps={d["rps"]:>9.0f} p50={d["p50_ms"]:.3f}ms '
                        f'p99={d["p99_ms"]:.3f}ms err={d["sock_errors"]}/{d["non2xx"]} proxied={d["proxied"]} '
                        f'weftd={d["cpu_us_per_req"]["weftd"]:.1f}us/req nginx={d["cpu_us_per_req"]["nginx"]:.1f}us/req'
                        + f' foreign={d["foreign_cores"]:.2f}' + (f' (waited {waited}s)' if waited > 1.5 else '')
                        + (f' -- {problem}' if problem else ''))
                    json.dump(res, open(f'{RUN_DIR}/results.json', 'w'), indent=1)
    finally:
        json.dump(res, open(f'{RUN_DIR}/results.json', 'w'), indent=1)
        if res['runs']:
            publish(summarize(res), RUN_DIR, RESULTS)
    bad = [p for p in res['problems'] if 'not proxied' in p or 'through the proxy' in p or 'not reported captured' in p]
    if bad:
        raise SystemExit('bench: capture checks failed:\n  ' + '\n  '.join(bad))


if __name__ == '__main__':
    if len(sys.argv) == 3 and sys.argv[1] == '--summarize':
        # python3 bench.py --summarize results/runs/<stamp>/results.json: the table again, to stdout
        saved = json.load(open(sys.argv[2]))
        TESTS = sorted({(r['test'], r['conns']) for r in saved['runs']}, key=lambda t: (t[0] != 'close', t[1]))
        print(summarize(saved), end='')
    else:
        main()
