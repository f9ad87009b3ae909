#!/usr/bin/env python3
"""Prometheus helpers for the observability tests (Python 3.11, stdlib and PyYAML).

  promtool.py queries DIR [--var NAME=VALUE ...] [--metrics FILE]
      Prints one JSON line {"dashboard": file, "panel": title, "expr": expr} per PromQL expression
      (targets[].expr) of every Grafana dashboard JSON in DIR, variables substituted: $NAME,
      ${NAME}, ${NAME:format} and [[NAME]] by the --var values, else by the dashboard's own current
      value (custom variables; "All" gives the variable's allValue); $__rate_interval and
      $__interval by 1m, $__range by 5m; ${datasource} is left alone. Template variables of type
      query are printed too, with panel "variable:NAME": label_values(SELECTOR, LABEL) as
      `group by (LABEL) (SELECTOR)`, query_result(EXPR) as EXPR. Exits 1 with a message, printing
      no expression, when a referenced variable has no value, or (with --metrics) when an
      expression names a metric that is not in FILE (one name a line; a histogram's name allows its
      _bucket, _sum and _count series).
  promtool.py serve --config-dir DIR --port P --targets HOST:PORT[,HOST:PORT...] [--interval 1s]
      Writes DIR/prometheus.yml (job weftd, /metrics, the static targets, scraped every interval)
      and execs /usr/bin/prometheus (Debian's package `prometheus`) in the foreground, storage in
      DIR/data, listening on 127.0.0.1:P. The process keeps this one's pid: kill it to stop.
  promtool.py ready URL [--timeout S]
      Waits until the server at URL answers /-/ready (exit 0), or the timeout (exit 1).
  promtool.py query URL EXPR
      An instant query (/api/v1/query); prints data.result as JSON. Exit 1 with the server's
      error (for example a parse error) when the status is not success.
  promtool.py wait URL EXPR --min N --timeout S [--every 0.25]
      Runs the query until the sum of the result's values is >= N (prints the result, exit 0) or
      the timeout (prints the last result or error, exit 1).

URL is the server's base (http://127.0.0.1:9090).
"""
import argparse, glob, json, math, os, re, sys, time, urllib.error, urllib.parse, urllib.request

import yaml

PROMETHEUS = "/usr/bin/prometheus"
BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__interval_ms": "60000",
            "__range": "5m", "__range_s": "300", "__range_ms": "300000"}
LEFT_ALONE = {"datasource"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class Failure(Exception):
    pass


# --- queries -------------------------------------------------------------------------------------
VAR_REF = re.compile(r"\$\{([A-Za-z_]\w*)(?::[^}]*)?\}|\[\[([A-Za-z_]\w*)(?::[^\]]*)?\]\]|\$([A-Za-z_]\w*)")


def dashboard_values(dashboard):
    """NAME -> value from the dashboard's own variables (current value, or allValue for All)."""
    values = {}
    for v in (dashboard.get("templating") or {}).get("list") or []:
        name, cur = v.get("name"), (v.get("current") or {}).get("value")
        if not name or v.get("type") == "datasource" or cur in (None, "", []):
            continue
        cur = cur if isinstance(cur, list) else [cur]
        if "$__all" in cur:
            if v.get("allValue"):
                values[name] = v["allValue"]
            continue
        values[name] = cur[0] if len(cur) == 1 else "(" + "|".join(cur) + ")"
    return values


def substitute(text, values, missing):
    def one(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in BUILTINS:
            return BUILTINS[name]
        if name in values:
            return values[name]
        if name not in LEFT_ALONE:
            missing.add(name)
        return m.group(0)
    return VAR_REF.sub(one, text)


def variable_promql(query):
    """The PromQL equivalent of a Prometheus template-variable query."""
    q = query.strip()
    m = re.fullmatch(r"label_values\s*\((.*)\)", q, re.S)
    if m:
        inner = m.group(1).strip()
        if "," in inner:
            selector, label = (s.strip() for s in inner.rsplit(",", 1))
            return f"group by ({label}) ({selector})"
        return f'group by ({inner}) ({{{inner}!=""}})'
    m = re.fullmatch(r"query_result\s*\((.*)\)", q, re.S)
    if m:
        return m.group(1).strip()
    m = re.fullmatch(r"metrics\s*\((.*)\)", q, re.S)
    if m:
        return f'group by (__name__) ({{__name__=~"{m.group(1).strip()}"}})'
    raise Failure(f"unsupported variable query: {query!r}")


TOKEN = re.compile(r"""
   (?P<ws>\s+)
 | (?P<comment>\#[^\n]*)
 | (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
 | (?P<dur>(?:\d+(?:ms|[smhdwy]))+(?![A-Za-z0-9_:]))
 | (?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
 | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
 | (?P<op>.)
""", re.X | re.S)
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "atan2", "inf", "nan"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATORS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
               "quantile", "limitk", "limit_ratio"}


def metric_names(expr):
    """Metric names an expression selects (a small PromQL lexer: enough for dashboards)."""
    tokens = [(m.lastgroup, m.group()) for m in TOKEN.finditer(expr) if m.lastgroup not in ("ws", "comment")]
    names, stack = set(), []
    for i, (kind, text) in enumerate(tokens):
        prev = tokens[i - 1][1].lower() if i else ""
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "op":
            if text in "{[":
                stack.append(text)
            elif text == "(":
                stack.append("labels" if prev in GROUPING else "(")
            elif text in ")}]" and stack:
                stack.pop()
            continue
        inside = stack[-1] if stack else "("
        if kind == "ident" and inside == "{" and text == "__name__" and nxt == "=" and i + 2 < len(tokens) \
                and tokens[i + 2][0] == "str":
            names.add(tokens[i + 2][1][1:-1])
        if kind != "ident" or inside != "(":
            continue
        low = text.lower()
        if low in KEYWORDS or nxt == "(" or (low in AGGREGATORS and nxt.lower() in ("by", "without")):
            continue
        names.add(text)
    return names


def load_allowed(path):
    allowed = set()
    with open(path) as f:
        for line in f:
            name = line.split("#", 1)[0].strip()
            if name:
                allowed.add(name)
                allowed.update(name + s for s in HISTOGRAM_SUFFIXES)
    return allowed


def collect(directory, given):
    files = sorted(glob.glob(os.path.join(directory, "*.json")))
    if not files:
        raise Failure(f"no dashboard JSON in {directory}")
    rows, problems, missing_by_file = [], [], {}
    for path in files:
        file = os.path.basename(path)
        try:
            with open(path) as f:
                dashboard = json.load(f)
        except (OSError, ValueError) as e:
            raise Failure(f"{file}: {e}")
        values = {**dashboard_values(dashboard), **given}

        def add(panel, expr):
            missing = set()
            out = substitute(expr, values, missing)
            missing_by_file.setdefault(file, set()).update(missing)
            rows.append({"dashboard": file, "panel": panel, "expr": out})

        for v in (dashboard.get("templating") or {}).get("list") or []:
            if v.get("type") != "query":
                continue
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            q = q or v.get("definition")
            if q:
                try:
                    add(f"variable:{v.get('name')}", variable_promql(q))
                except Failure as e:
                    problems.append(f"{file}: variable {v.get('name')}: {e}")

        def walk(panels):
            for p in panels or []:
                for t in p.get("targets") or []:
                    if isinstance(t.get("expr"), str) and t["expr"].strip():
                        add(p.get("title", ""), t["expr"])
                walk(p.get("panels"))
        walk(dashboard.get("panels"))
    for file, missing in missing_by_file.items():
        if missing:
            problems.append(f"{file}: no value for variable(s) {', '.join(sorted(missing))} (pass --var NAME=VALUE)")
    return rows, problems


def cmd_queries(a):
    given = {}
    for item in a.var or []:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise Failure(f"--var wants NAME=VALUE, got {item!r}")
        given[name] = value
    rows, problems = collect(a.dir, given)
    if a.metrics:
        allowed = load_allowed(a.metrics)
        for r in rows:
            for name in sorted(metric_names(r["expr"]) - allowed):
                problems.append(f"{r['dashboard']}: {r['panel']}: metric {name} is not in {a.metrics}: {r['expr']}")
    if problems:
        raise Failure("\n".join(problems))
    for r in rows:
        print(json.dumps(r))
    return 0


# --- serve ---------------------------------------------------------------------------------------
DURATION = re.compile(r"(?:\d+(?:ms|[smhdwy]))+")
TARGET = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}")


def cmd_serve(a):
    if not DURATION.fullmatch(a.interval):
        raise Failure(f"--interval: not a Prometheus duration: {a.interval!r}")
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    for t in targets:
        if not TARGET.fullmatch(t):
            raise Failure(f"--targets: not host:port: {t!r}")
    if not os.access(a.prometheus, os.X_OK):
        raise Failure(f"{a.prometheus} not found: apt-get install prometheus (or make deps)")
    directory = os.path.abspath(a.config_dir)
    os.makedirs(os.path.join(directory, "data"), exist_ok=True)
    config = {"global": {"scrape_interval": a.interval, "scrape_timeout": a.interval,
                         "evaluation_interval": a.interval},
              "scrape_configs": [{"job_name": "weftd", "metrics_path": "/metrics", "scheme": "http",
                                  "static_configs": [{"targets": targets}]}]}
    path = os.path.join(directory, "prometheus.yml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    argv = [a.prometheus, f"--config.file={path}", f"--storage.tsdb.path={os.path.join(directory, 'data')}",
            f"--web.listen-address=127.0.0.1:{a.port}", "--log.level=warn", "--storage.tsdb.retention.time=1d"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(a.prometheus, argv)


# --- query, wait, ready --------------------------------------------------------------------------
def instant(url, expr, timeout=10.0):
    base = url.rstrip("/")
    if not base.endswith("/api/v1/query"):
        base += "/api/v1/query"
    req = urllib.request.Request(base, data=urllib.parse.urlencode({"query": expr}).encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        body = e.read()
    except (urllib.error.URLError, OSError) as e:
        raise Failure(f"{base}: {getattr(e, 'reason', e)}")
    try:
        answer = json.loads(body)
    except ValueError:
        raise Failure(f"{base}: not JSON: {body[:200]!r}")
    if answer.get("status") != "success":
        raise Failure(f"{answer.get('errorType', 'error')}: {answer.get('error', answer)}")
    return answer["data"]["result"]


def total(result):
    def num(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return math.nan
    if not isinstance(result, list):
        return math.nan
    if len(result) == 2 and not isinstance(result[0], dict):      # scalar: [time, "value"]
        return num(result[1])
    s = 0.0
    for series in result:
        if "value" in series:
            s += num(series["value"][1])
        elif series.get("values"):
            s += num(series["values"][-1][1])
    return s


def cmd_query(a):
    print(json.dumps(instant(a.url, a.expr)))
    return 0


def cmd_wait(a):
    deadline, last, error = time.monotonic() + a.timeout, None, None
    while True:
        try:
            last, error = instant(a.url, a.expr), None
            value = total(last)
            if not math.isnan(value) and value >= a.min:
                print(json.dumps(last))
                return 0
        except Failure as e:
            error = str(e)
        if time.monotonic() >= deadline:
            if error:
                print(f"wait: {error}", file=sys.stderr)
            print(json.dumps(last))
            print(f"wait: {a.expr} did not reach {a.min} in {a.timeout}s (last sum {total(last) if last is not None else 'none'})",
                  file=sys.stderr)
            return 1
        time.sleep(a.every)


def cmd_ready(a):
    deadline, error = time.monotonic() + a.timeout, ""
    while True:
        try:
            with urllib.request.urlopen(a.url.rstrip("/") + "/-/ready", timeout=2) as r:
                if r.status == 200:
                    return 0
        except urllib.error.HTTPError as e:
            error = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            error = str(getattr(e, "reason", e))
        if time.monotonic() >= deadline:
            print(f"ready: {a.url} not ready in {a.timeout}s: {error}", file=sys.stderr)
            return 1
        time.sleep(0.2)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("queries")
    s.add_argument("dir")
    s.add_argument("--var", action="append", metavar="NAME=VALUE")
    s.add_argument("--metrics", metavar="FILE")
    s.set_defaults(run=cmd_queries)
    s = sub.add_parser("serve")
    s.add_argument("--config-dir", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--targets", required=True)
    s.add_argument("--interval", default="1s")
    s.add_argument("--prometheus", default=PROMETHEUS)
    s.set_defaults(run=cmd_serve)
    s = sub.add_parser("ready")
    s.add_argument("url")
    s.add_argument("--timeout", type=float, default=30)
    s.set_defaults(run=cmd_ready)
    s = sub.add_parser("query")
    s.add_argument("url")
    s.add_argument("expr")
    s.set_defaults(run=cmd_query)
    s = sub.add_parser("wait")
    s.add_argument("url")
    s.add_argument("expr")
    s.add_argument("--min", type=float, required=True)
    s.add_argument("--timeout", type=float, required=True)
    s.add_argument("--every", type=float, default=0.25)
    s.set_defaults(run=cmd_wait)
    a = p.parse_args()
    try:
        sys.exit(a.run(a))
    except Failure as e:
        print(f"promtool.py {a.command}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
