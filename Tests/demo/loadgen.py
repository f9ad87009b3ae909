#!/usr/bin/env python3
"""The demo's traffic generator (stdlib only): GETs URL in a loop from inside the frontend
workload, resolving the name through the mesh's DNS, and prints one JSON line every INTERVAL
seconds: {"t", "requests", "ok", "failed", "by": {backend: {"n", "p99_ms"}}} for that interval."""
import argparse, json, sys, time, urllib.error, urllib.request


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--interval", type=float, default=3.0)
    p.add_argument("--rate", type=float, default=50.0, help="requests per second, at most")
    a = p.parse_args()
    window, ok, failed, lat = time.monotonic(), 0, 0, {}
    gap = 1.0 / a.rate
    while True:
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(a.url, timeout=3) as r:
                name = json.loads(r.read()).get("name", "?")
            ok += 1
            lat.setdefault(name, []).append((time.monotonic() - t0) * 1000)
        except (OSError, ValueError, urllib.error.URLError):
            failed += 1
        now = time.monotonic()
        if now - window >= a.interval:
            by = {}
            for name, xs in lat.items():
                xs.sort()
                by[name] = {"n": len(xs), "p99_ms": round(xs[min(len(xs) - 1, int(len(xs) * 0.99))], 2)}
            print(json.dumps({"t": time.time(), "seconds": round(now - window, 2), "requests": ok + failed,
                              "ok": ok, "failed": failed, "by": by}), flush=True)
            window, ok, failed, lat = now, 0, 0, {}
        time.sleep(max(0.0, gap - (time.monotonic() - t0)))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
