#!/usr/bin/env python3
"""Network probe for Weft's integration tests (stdlib only).

Every report is one JSON object on one stdout line, flushed at once, so the
Swift harness can follow a long-running process by reading its output file.

  serve --host H --port P        threaded TCP server; per connection sends
                                 "hello <peer-ip> <peer-port>\\n", echoes until
                                 EOF, then closes. Logs {"event":"accept",...}
                                 per accepted connection (the tests count them).
  probe --host H --port P [--family 4|6|6mapped] [--payload X]
        [--payload-size N] [--half-close] [--timeout S]
  loop  --host H --port P [--interval 0.2] [probe options]
  many  --host H --port P --count N [--workers W] [--family ...] [--timeout S]
  http  --url URL [--timeout S]  GET; prints {"status":..,"body":..}
  requests --url URL [--count N] [--method M] [--header "N: V"] [--timeout S]
        [--keep-alive] [--workers W] [--no-redirects] [--tally-header NAME]
        [--tally-echoed NAME] [--timing] [--sequence]
        [--vary-header "N: PREFIX" --vary-count K] [--body TEXT [--chunked]]
                                 N requests, each on a fresh connection (urllib, which
                                 follows redirects unless --no-redirects), or with
                                 --keep-alive on one http.client connection per worker
                                 (reopened only when it closes; redirects never
                                 followed); W threads share N. Prints {"statuses",
                                 "names" (httpecho's "name" in JSON bodies), "samples"
                                 (first response of each status), "errors"}, plus
                                 "header_values" {NAME: {value: count}} of response
                                 headers, "echoed" {NAME: {value: count}} of the request
                                 headers httpecho echoed ("-": absent), and "elapsed"
                                 {"min","max","median","total"} in seconds when asked.
                                 --sequence adds "sequence": one {"status", "name", "t",
                                 "elapsed"} per request, in the order the answers came
                                 (status 0 and "error" for a failed request; t is
                                 time.time() when the answer was read, elapsed its
                                 seconds). --vary-header sends header N on request i
                                 (numbered in the order requests start) with the value
                                 PREFIX + str(i % K) (K defaults to 10), on top of any
                                 --header; each sequence entry then says it in "sent".
                                 --body sends TEXT as each request's body, with a
                                 Content-Length or (--chunked, with --keep-alive) in two
                                 chunks; "bodies" {"whole","changed": count} says whether
                                 httpecho echoed it unchanged.
  hold  --host H --port P --duration S
                                 one connection kept open for S seconds, echoing a
                                 line every 0.2 s; prints {"ok":..,"rounds":..}
  tls   --host H --port P [--cert C --key K] [--ca CA] [--sni NAME] [--plaintext]
                                 an HBONE client's first steps: TLS 1.3 with ALPN h2
                                 (or plain bytes), the HTTP/2 preface and SETTINGS;
                                 prints whether the handshake held and whether the
                                 server answered with an HTTP/2 SETTINGS frame.
  linger --host H --port P --duration S [--interval 0.05]
                                 one connection to a `serve` server, a line echoed every
                                 interval and the socket watched in between, so that a
                                 close or reset is seen the moment it arrives: prints
                                 {"event":"connected","t":..} after the first echo, then
                                 {"event":"closed","t":..,"error":..,"rounds":..} or
                                 {"event":"done","ok":true,..}; t is time.time().
  session --host H --port P --request "METHOD PATH" [--request ...] [--header "N: V"]
                                 HTTP/1.1 requests one after the other on one keep-alive
                                 connection (reopened only if the server closed it);
                                 prints {"responses":[{"status","body","content_type",
                                 "local_port","will_close","error"}, ...]}: equal local
                                 ports mean one connection carried both requests.
  raw --host H --port P --send TEXT [--send ...] [--quiet 0.5]
                                 each TEXT (with \\r\\n escapes) sent on one connection and
                                 what came back until --quiet seconds of silence; prints
                                 {"received": [text, ...]}: the bytes as written.
  websocket --url http://HOST[:PORT]/PATH [--messages N]
                                 a WebSocket client (RFC 6455): the upgrade request and
                                 its first message in one write (bytes after the request
                                 head, before any 101), then N-1 more, each answer read;
                                 then a close. Prints {"status","accept_ok","echoed":[..],
                                 "closed_cleanly","error"}.

Client subcommands (probe, loop, many, hold, linger) take --mark N (e.g. 0x5746): SO_MARK
on the socket before it connects (needs CAP_NET_ADMIN).
"""
import argparse
import errno
import hashlib
import http.client
import json
import os
import select
import socket
import socketserver
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def error_name(exc):
    if isinstance(exc, socket.timeout):
        return "timeout"
    code = getattr(exc, "errno", None)
    if code is not None and code in errno.errorcode:
        return errno.errorcode[code]
    return type(exc).__name__


def endpoint(addr):
    # AF_INET6 gives (host, port, flowinfo, scope_id); only host and port matter.
    return [addr[0], addr[1]]


def server_side(addr):
    # The dual-stack server sees IPv4 peers as ::ffff:a.b.c.d; report them plainly.
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[len("::ffff:"):]
    return [host, addr[1]]


def make_payload(text, size):
    if size:
        pattern = b"weft-half-close-"
        return (pattern * (size // len(pattern) + 1))[:size]
    return (text or "ping").encode()


def open_socket(family, host, port, timeout, mark=None):
    if family == "4":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (host, port)
    elif family == "6":
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        target = (host, port, 0, 0)
    elif family == "6mapped":
        # An IPv4 destination dialled from a dual-stack AF_INET6 socket.
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        target = ("::ffff:" + host if "." in host else host, port, 0, 0)
    else:
        raise ValueError("unknown family " + family)
    if mark is not None:
        # SO_MARK (36 on Linux) needs CAP_NET_ADMIN; a failure is reported like a connect error.
        try:
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_MARK", 36), mark)
        except OSError:
            sock.close()
            raise
    sock.settimeout(timeout)
    return sock, target


def read_line(sock, buf):
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    return line.decode(errors="replace"), rest


def probe_once(args):
    payload = make_payload(args.payload, args.payload_size)
    result = {
        "ok": False, "error": None, "stage": "connect", "local": None, "peer": None,
        "hello": None, "echo": None, "echo_len": 0, "echo_matches": False,
        "eof": False, "pid": os.getpid(), "elapsed_ms": 0.0,
    }
    start = time.monotonic()
    sock = None
    try:
        sock, target = open_socket(args.family, args.host, args.port, args.timeout, getattr(args, "mark", None))
        sock.connect(target)
        result["local"] = endpoint(sock.getsockname())
        result["peer"] = endpoint(sock.getpeername())
        result["stage"] = "hello"
        hello, echoed = read_line(sock, b"")
        if hello is None:
            raise ConnectionAbortedError(0, "EOF")
        result["hello"] = hello
        result["stage"] = "echo"
        sock.sendall(payload)
        if args.half_close:
            # Our side is done: the echo must still arrive in full, then EOF.
            sock.shutdown(socket.SHUT_WR)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    result["eof"] = True
                    break
                echoed += chunk
        else:
            while len(echoed) < len(payload):
                chunk = sock.recv(65536)
                if not chunk:
                    result["eof"] = True
                    break
                echoed += chunk
        result["echo_len"] = len(echoed)
        result["echo_matches"] = echoed == payload
        if len(echoed) <= 256:
            result["echo"] = echoed.decode(errors="replace")
        else:
            result["echo_sha256"] = hashlib.sha256(echoed).hexdigest()
        result["ok"] = result["echo_matches"] and (result["eof"] or not args.half_close)
        if not result["ok"] and result["error"] is None:
            result["error"] = "EOF" if result["eof"] else "short-echo"
    except ConnectionAbortedError as exc:
        result["error"] = "EOF" if exc.errno == 0 else error_name(exc)
    except OSError as exc:
        result["error"] = error_name(exc)
    finally:
        if sock is not None:
            sock.close()
    result["elapsed_ms"] = round((time.monotonic() - start) * 1000, 1)
    return result


def cmd_probe(args):
    emit(probe_once(args))


def cmd_loop(args):
    seq = 0
    while True:
        result = probe_once(args)
        result["seq"] = seq
        result["t"] = time.time()
        emit(result)
        seq += 1
        time.sleep(args.interval)


def many_worker(args, count, totals, lock):
    ok = failed = loopback = 0
    errors = {}
    for _ in range(count):
        sock = None
        try:
            sock, target = open_socket(args.family, args.host, args.port, args.timeout, getattr(args, "mark", None))
            sock.connect(target)
            if sock.getsockname()[0] in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
                loopback += 1
            hello, echoed = read_line(sock, b"")
            if hello is None:
                raise ConnectionAbortedError(0, "EOF")
            sock.sendall(b"x")
            while len(echoed) < 1:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionAbortedError(0, "EOF")
                echoed += chunk
            ok += 1
        except OSError as exc:
            failed += 1
            name = "EOF" if isinstance(exc, ConnectionAbortedError) and exc.errno == 0 else error_name(exc)
            errors[name] = errors.get(name, 0) + 1
        finally:
            if sock is not None:
                sock.close()
    with lock:
        totals["ok"] += ok
        totals["failed"] += failed
        totals["loopback_local"] += loopback
        for name, n in errors.items():
            totals["errors"][name] = totals["errors"].get(name, 0) + n


def cmd_many(args):
    # Each worker thread opens its connections one after the other; several
    # workers only shorten the wall time.
    totals = {"ok": 0, "failed": 0, "loopback_local": 0, "errors": {}}
    lock = threading.Lock()
    start = time.monotonic()
    workers = max(1, args.workers)
    threads = [
        threading.Thread(target=many_worker, args=(args, args.count // workers + (i < args.count % workers), totals, lock))
        for i in range(workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    totals["elapsed_ms"] = round((time.monotonic() - start) * 1000, 1)
    emit(totals)


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        peer = server_side(self.request.getpeername())
        emit({"event": "accept", "peer": peer, "local": server_side(self.request.getsockname())})
        try:
            self.request.sendall(("hello %s %d\n" % (peer[0], peer[1])).encode())
            while True:
                data = self.request.recv(65536)
                if not data:
                    break
                self.request.sendall(data)
        except OSError:
            pass


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, host, port):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), EchoHandler, bind_and_activate=False)
        if self.address_family == socket.AF_INET6:
            # "::" serves IPv4 (as ::ffff:a.b.c.d) and IPv6 alike.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.server_bind()
        self.server_activate()


def cmd_serve(args):
    server = Server(args.host, args.port)
    emit({"event": "listening", "address": endpoint(server.socket.getsockname())})
    server.serve_forever(poll_interval=0.1)


def cmd_sink(args):
    """Accepts connections and never reads from them: a receiver that does not keep up."""
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((args.host, args.port))
    server.listen(16)
    emit({"event": "listening", "address": endpoint(server.getsockname())})
    held = []
    while True:
        conn, _ = server.accept()
        held.append(conn)


def cmd_flood(args):
    """Writes as fast as the socket takes it for `seconds`, never reading:
    how much a connection can push at a receiver that does not read."""
    result = {"ok": False, "sent": 0, "blocked": 0, "error": None}
    try:
        sock, target = open_socket(args.family, args.host, args.port, args.timeout, None)
        with sock:
            sock.connect(target)
            sock.setblocking(False)
            chunk = b"x" * 65536
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                try:
                    result["sent"] += sock.send(chunk)
                except BlockingIOError:
                    result["blocked"] += 1
                    select.select([], [sock], [], 0.05)
        result["ok"] = True
    except OSError as exc:
        result["error"] = error_name(exc)
    emit(result)


def cmd_http(args):
    try:
        with urllib.request.urlopen(args.url, timeout=args.timeout) as resp:
            emit({"status": resp.status, "body": resp.read().decode(errors="replace")})
    except urllib.error.HTTPError as exc:
        emit({"status": exc.code, "body": exc.read().decode(errors="replace")})
    except (OSError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", exc)
        emit({"status": 0, "body": "", "error": error_name(reason) if isinstance(reason, OSError) else str(reason)})


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hands 3xx answers back as they are (urllib raises them as HTTPError)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def requests_worker(args, count, headers, result, timings, lock, counter=None):
    """`count` requests, each tallied into `result` under `lock`."""
    opener = urllib.request.build_opener(NoRedirect) if args.no_redirects else None
    conn = None
    if args.keep_alive:
        target = urllib.parse.urlsplit(args.url)
        path = (target.path or "/") + ("?" + target.query if target.query else "")
    common = headers
    for _ in range(count):
        varied = None
        if args.vary_header:
            # The varied header, numbered across workers in the order requests start.
            with lock:
                number = counter[0]
                counter[0] += 1
            vary_name, _, prefix = args.vary_header.partition(":")
            varied = prefix.strip() + str(number % max(1, args.vary_count))
            headers = dict(common)
            headers[vary_name.strip()] = varied
        started = time.monotonic()
        try:
            if args.keep_alive:
                if conn is None:
                    conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=args.timeout)
                try:
                    if args.body is None:
                        conn.request(args.method, path, headers=headers)
                    elif args.chunked:
                        # Two chunks, so that a body split across writes is what arrives whole.
                        half = len(args.body) // 2
                        parts = [args.body[:half].encode(), args.body[half:].encode()]
                        conn.request(args.method, path, body=iter(parts), encode_chunked=True,
                                     headers={**headers, "Transfer-Encoding": "chunked"})
                    else:
                        conn.request(args.method, path, body=args.body.encode(), headers=headers)
                    resp = conn.getresponse()
                    status, body, rh = resp.status, resp.read().decode(errors="replace"), dict(resp.getheaders())
                    if resp.will_close:
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = None
                    raise
            else:
                req = urllib.request.Request(args.url, headers=headers, method=args.method,
                                             data=None if args.body is None else args.body.encode())
                try:
                    with (opener.open(req, timeout=args.timeout) if opener else urllib.request.urlopen(req, timeout=args.timeout)) as resp:
                        status, body, rh = resp.status, resp.read().decode(errors="replace"), dict(resp.headers.items())
                except urllib.error.HTTPError as exc:
                    status, body, rh = exc.code, exc.read().decode(errors="replace"), dict(exc.headers.items())
        except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            name = error_name(reason) if isinstance(reason, OSError) else (str(exc) or type(exc).__name__)
            with lock:
                result["errors"][name] = result["errors"].get(name, 0) + 1
                if args.sequence:
                    entry = {"status": 0, "error": name, "t": time.time(),
                             "elapsed": round(time.monotonic() - started, 4)}
                    if varied is not None:
                        entry["sent"] = varied
                    result["sequence"].append(entry)
            continue
        elapsed = time.monotonic() - started
        answered = time.time()
        try:
            echoed = json.loads(body)
        except ValueError:
            echoed = None
        if not isinstance(echoed, dict):
            echoed = {}
        name = echoed.get("name")
        lowered = {k.lower(): v for k, v in rh.items()}
        with lock:
            result["statuses"][str(status)] = result["statuses"].get(str(status), 0) + 1
            if name:
                result["names"][name] = result["names"].get(name, 0) + 1
            if args.body is not None:
                whole = "whole" if echoed.get("body") == args.body else "changed"
                result["bodies"][whole] = result["bodies"].get(whole, 0) + 1
            result["samples"].setdefault(str(status), {"body": body[:2000], "headers": lowered})
            for h in args.tally_header:
                seen = result["header_values"][h.lower()]
                value = lowered.get(h.lower(), "-")
                seen[value] = seen.get(value, 0) + 1
            for h in args.tally_echoed:
                seen = result["echoed"][h.lower()]
                sent = echoed.get("headers")
                value = sent.get(h.lower(), "-") if isinstance(sent, dict) else "-"
                seen[value] = seen.get(value, 0) + 1
            timings.append(elapsed)
            if args.sequence:
                entry = {"status": status, "name": name, "t": answered, "elapsed": round(elapsed, 4)}
                if varied is not None:
                    entry["sent"] = varied
                result["sequence"].append(entry)
    if conn is not None:
        conn.close()


def cmd_requests(args):
    """GETs args.count times on fresh connections (or, with --keep-alive, on one
    connection per worker); tallies statuses and the backend names in JSON
    bodies; keeps the first response of each status."""
    result = {"statuses": {}, "names": {}, "samples": {}, "errors": {}}
    if args.tally_header:
        result["header_values"] = {h.lower(): {} for h in args.tally_header}
    if args.tally_echoed:
        result["echoed"] = {h.lower(): {} for h in args.tally_echoed}
    if args.body is not None:
        if args.chunked and not args.keep_alive:
            sys.exit("netprobe requests: --chunked needs --keep-alive")
        result["bodies"] = {}
    if args.sequence:
        result["sequence"] = []
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    timings = []
    lock = threading.Lock()
    counter = [0]
    workers = max(1, args.workers)
    started = time.monotonic()
    if workers == 1:
        requests_worker(args, args.count, headers, result, timings, lock, counter)
    else:
        threads = [
            threading.Thread(target=requests_worker,
                             args=(args, args.count // workers + (i < args.count % workers), headers, result, timings, lock,
                                   counter))
            for i in range(workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if args.timing:
        timings.sort()
        result["elapsed"] = {
            "min": round(timings[0], 4) if timings else None,
            "max": round(timings[-1], 4) if timings else None,
            "median": round(timings[len(timings) // 2], 4) if timings else None,
            "total": round(time.monotonic() - started, 3),
        }
    emit(result)


def cmd_hold(args):
    result = {"ok": False, "rounds": 0, "error": None}
    sock = None
    try:
        sock, target = open_socket(args.family, args.host, args.port, args.timeout, getattr(args, "mark", None))
        sock.connect(target)
        hello, buf = read_line(sock, b"")
        if hello is None:
            raise ConnectionAbortedError(0, "EOF")
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            line = "tick-%d" % result["rounds"]
            sock.sendall((line + "\n").encode())
            echoed, buf = read_line(sock, buf)
            if echoed != line:
                raise ConnectionAbortedError(0, "EOF")
            result["rounds"] += 1
            time.sleep(0.2)
        result["ok"] = True
    except ConnectionAbortedError as exc:
        result["error"] = "EOF" if exc.errno == 0 else error_name(exc)
    except OSError as exc:
        result["error"] = error_name(exc)
    finally:
        if sock is not None:
            sock.close()
    emit(result)


def cmd_linger(args):
    rounds = 0
    sock = None
    try:
        sock, target = open_socket(args.family, args.host, args.port, args.timeout, args.mark)
        sock.connect(target)
        hello, buf = read_line(sock, b"")
        if hello is None:
            raise ConnectionAbortedError(0, "EOF")
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            line = "tick-%d" % rounds
            sock.sendall((line + "\n").encode())
            echoed, buf = read_line(sock, buf)
            if echoed != line:
                raise ConnectionAbortedError(0, "EOF")
            rounds += 1
            if rounds == 1:
                emit({"event": "connected", "t": time.time()})
            # Between lines, wait on the socket: a FIN or RST wakes us at once.
            readable, _, _ = select.select([sock], [], [], args.interval)
            if readable:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionAbortedError(0, "EOF")
                buf += chunk
        emit({"event": "done", "ok": True, "rounds": rounds, "t": time.time()})
    except ConnectionAbortedError as exc:
        emit({"event": "closed", "t": time.time(), "rounds": rounds,
              "error": "EOF" if exc.errno == 0 else error_name(exc)})
    except OSError as exc:
        emit({"event": "closed", "t": time.time(), "rounds": rounds, "error": error_name(exc)})
    finally:
        if sock is not None:
            sock.close()


def cmd_session(args):
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
    responses = []
    for spec in args.request:
        method, _, path = spec.partition(" ")
        entry = {"request": spec, "status": None, "body": None, "content_type": None,
                 "local_port": None, "will_close": None, "error": None}
        try:
            conn.request(method, path or "/", headers=headers)
            if conn.sock is not None:
                entry["local_port"] = conn.sock.getsockname()[1]
            resp = conn.getresponse()
            entry["status"] = resp.status
            entry["content_type"] = resp.getheader("content-type")
            entry["will_close"] = bool(resp.will_close)
            entry["body"] = resp.read().decode(errors="replace")[:2000]
        except (OSError, http.client.HTTPException) as exc:
            entry["error"] = error_name(exc)
            conn.close()
        responses.append(entry)
    conn.close()
    emit({"responses": responses})


def cmd_raw(args):
    """Sends each --send (Python escapes: \\r\\n) on one connection and collects whatever arrives
    until nothing has for --quiet seconds: the bytes as the server wrote them, which an HTTP
    client library would parse (and tidy) away."""
    received = []
    with socket.create_connection((args.host, args.port), timeout=args.timeout) as sock:
        for text in args.send:
            sock.sendall(text.encode().decode("unicode_escape").encode("latin-1"))
            got = b""
            sock.settimeout(args.quiet)
            try:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    got += chunk
            except socket.timeout:
                pass
            received.append(got.decode("latin-1"))
    emit({"received": received})


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def cmd_tls(args):
    result = {"handshake": False, "h2_settings": False, "error": None, "first_bytes": None, "alpn": None}
    raw = None
    try:
        raw = socket.create_connection((args.host, args.port), timeout=args.timeout)
        conn = raw
        if not args.plaintext:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            ctx.check_hostname = False
            if args.ca:
                ctx.load_verify_locations(args.ca)
                ctx.verify_mode = ssl.CERT_REQUIRED
            else:
                ctx.verify_mode = ssl.CERT_NONE
            if args.cert:
                ctx.load_cert_chain(args.cert, args.key)
            ctx.set_alpn_protocols(["h2"])
            conn = ctx.wrap_socket(raw, server_hostname=args.sni or None)
            result["handshake"] = True
            result["alpn"] = conn.selected_alpn_protocol()
        conn.sendall(H2_PREFACE)
        data = b""
        deadline = time.monotonic() + args.timeout
        while len(data) < 9 and time.monotonic() < deadline:
            chunk = conn.recv(65536)
            if not chunk:
                result["error"] = "EOF"
                break
            data += chunk
        result["first_bytes"] = data[:16].hex()
        # An HTTP/2 frame header: 3 bytes length, type 4 (SETTINGS), flags, stream 0.
        result["h2_settings"] = len(data) >= 9 and data[3] == 4 and data[5:9] == b"\x00\x00\x00\x00"
    except ssl.SSLError as exc:
        result["error"] = "ssl:" + (exc.reason or str(exc))
    except OSError as exc:
        result["error"] = error_name(exc)
    finally:
        if raw is not None:
            raw.close()
    emit(result)


def cmd_websocket(args):
    import base64, struct
    target = urllib.parse.urlsplit(args.url)
    result = {"status": None, "accept_ok": False, "echoed": [], "closed_cleanly": False, "error": None}
    key = base64.b64encode(os.urandom(16)).decode()
    expected = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()

    def frame(opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def read_exact(f, n):
        data = f.read(n)
        if len(data) < n:
            raise ConnectionError("eof")
        return data

    def read_frame(f):
        first = read_exact(f, 2)
        n = first[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", read_exact(f, 2))[0]
        elif n == 127:
            n = struct.unpack("!Q", read_exact(f, 8))[0]
        return first[0] & 0x0F, read_exact(f, n)

    sock = None
    try:
        sock = socket.create_connection((target.hostname, target.port or 80), timeout=args.timeout)
        request = (f"GET {target.path or '/'} HTTP/1.1\r\nHost: {target.netloc}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        sock.sendall(request.encode() + frame(1, b"m0"))
        f = sock.makefile("rb")
        status = f.readline().decode().split()
        result["status"] = int(status[1]) if len(status) > 1 else None
        headers = {}
        while True:
            line = f.readline().decode()
            if line in ("\r\n", "\n", ""):
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        result["accept_ok"] = headers.get("sec-websocket-accept") == expected
        if result["status"] != 101:
            return
        for i in range(args.messages):
            if i > 0:
                sock.sendall(frame(1, f"m{i}".encode()))
            opcode, payload = read_frame(f)
            result["echoed"].append(payload.decode(errors="replace"))
        sock.sendall(frame(8, struct.pack("!H", 1000)))
        opcode, _ = read_frame(f)
        result["closed_cleanly"] = opcode == 8
    except (OSError, ConnectionError, ValueError) as exc:
        result["error"] = str(exc)
    finally:
        if sock is not None:
            sock.close()
        emit(result)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def client(p):
        p.add_argument("--host", required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--family", choices=["4", "6", "6mapped"], default=None)
        p.add_argument("--timeout", type=float, default=5.0)
        p.add_argument("--mark", type=lambda text: int(text, 0), default=None)

    def single(p):
        p.add_argument("--payload", default="ping")
        p.add_argument("--payload-size", type=int, default=0)
        p.add_argument("--half-close", action="store_true")

    p = sub.add_parser("websocket")
    p.add_argument("--url", required=True)
    p.add_argument("--messages", type=int, default=3)
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(func=cmd_websocket)

    def server(p, func):
        p.add_argument("--host", required=True)
        p.add_argument("--port", type=int, required=True)
        p.set_defaults(func=func)

    server(sub.add_parser("serve"), cmd_serve)
    server(sub.add_parser("sink"), cmd_sink)

    p = sub.add_parser("probe")
    client(p)
    single(p)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("loop")
    client(p)
    single(p)
    p.add_argument("--interval", type=float, default=0.2)
    p.set_defaults(func=cmd_loop)

    p = sub.add_parser("many")
    client(p)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_many)

    p = sub.add_parser("http")
    p.add_argument("--url", required=True)
    p.add_argument("--timeout", type=float, default=2.0)
    p.set_defaults(func=cmd_http)

    p = sub.add_parser("requests")
    p.add_argument("--url", required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--method", default="GET")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--keep-alive", action="store_true")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-redirects", action="store_true")
    p.add_argument("--tally-header", action="append", default=[])
    p.add_argument("--tally-echoed", action="append", default=[])
    p.add_argument("--body", default=None)
    p.add_argument("--chunked", action="store_true")
    p.add_argument("--timing", action="store_true")
    p.add_argument("--sequence", action="store_true")
    p.add_argument("--vary-header", default=None)
    p.add_argument("--vary-count", type=int, default=10)
    p.set_defaults(func=cmd_requests)

    p = sub.add_parser("flood")
    client(p)
    p.add_argument("--seconds", type=float, required=True)
    p.set_defaults(func=cmd_flood)

    p = sub.add_parser("hold")
    client(p)
    p.add_argument("--duration", type=float, required=True)
    p.set_defaults(func=cmd_hold)

    p = sub.add_parser("linger")
    client(p)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--interval", type=float, default=0.05)
    p.set_defaults(func=cmd_linger)

    p = sub.add_parser("session")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--request", action="append", required=True)
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(func=cmd_session)
    p = sub.add_parser("raw")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--send", action="append", required=True)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--quiet", type=float, default=0.5)
    p.set_defaults(func=cmd_raw)

    p = sub.add_parser("tls")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--ca")
    p.add_argument("--sni")
    p.add_argument("--plaintext", action="store_true")
    p.add_argument("--timeout", type=float, default=3.0)
    p.set_defaults(func=cmd_tls)

    args = parser.parse_args()
    if getattr(args, "family", "x") is None:
        args.family = "6" if ":" in args.host else "4"
    args.func(args)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
