#!/usr/bin/env python3
"""An HTTP/1.1 backend for the L7 tests (stdlib only).

  httpecho.py --port P --name NAME [--fail-every N] [--fail-path PREFIX ...]
              [--reset-path PREFIX ...] [--delay-path PREFIX --delay-ms MS]

Answers every request (but HEAD: its head alone, without Content-Length) with 200 and a JSON body: {"name": NAME, "method": ..., "path": ...,
"headers": {lower-cased name: value}, "body": the request's body, read by its length or
chunked}; prints {"event": "listening"} once ready.

Misbehaving on purpose (for retries, timeouts and faults), all off by default:
  --fail-every N        every Nth request received (counting as /__stats does) is answered
                        503, with the same JSON body
  --fail-path PREFIX    requests whose path starts with PREFIX are answered 503 (repeatable)
  --reset-path PREFIX   requests whose path starts with PREFIX get no answer: the connection
                        is reset (SO_LINGER 0) before any response byte (repeatable)
  --delay-path PREFIX   with --delay-ms MS: requests whose path starts with PREFIX are
                        answered after sleeping MS milliseconds

A GET with `Connection: upgrade` and `Upgrade: websocket` (RFC 6455) is answered 101 and
becomes a WebSocket echo: each text or binary message comes back as a text message
"NAME:<payload>"; a close is answered with a close.

GET /__stats (never counted itself) answers {"count": N, "last": {"method", "path",
"headers"} or null, "active": A, "max_active": M}: how many requests this server
received, the last of them, how many it is answering now and the most it was ever
answering at once (for circuit breaking); for the tests to query directly, from
outside the mesh.
"""
import argparse, base64, hashlib, json, socket, struct, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_frame(opcode, payload, mask=None):
    """One final frame; masked (a client's) when `mask` is 4 bytes."""
    head = bytes([0x80 | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def read_frame(f):
    """(opcode, payload) of the next frame from file-like `f`, or None at EOF."""
    first = f.read(2)
    if len(first) < 2:
        return None
    opcode, n = first[0] & 0x0F, first[1] & 0x7F
    masked = first[1] & 0x80
    if n == 126:
        n = struct.unpack("!H", f.read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", f.read(8))[0]
    mask = f.read(4) if masked else None
    payload = f.read(n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def read_chunked(f):
    """A chunked body (RFC 9112 7.1), its trailers read and dropped."""
    body = b""
    while True:
        size = int(f.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while f.readline() not in (b"\r\n", b"\n", b""):
                pass
            return body
        body += f.read(size)
        f.readline()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--fail-every", type=int, default=0)
    p.add_argument("--fail-path", action="append", default=[])
    p.add_argument("--reset-path", action="append", default=[])
    p.add_argument("--delay-path", default=None)
    p.add_argument("--delay-ms", type=int, default=0)
    a = p.parse_args()

    lock = threading.Lock()
    stats = {"count": 0, "last": None, "active": 0, "max_active": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Head and body are two writes: without TCP_NODELAY a keep-alive client's
        # delayed ACK would hold every body back by 40 ms.
        disable_nagle_algorithm = True

        def send_json(self, status, obj):
            out = json.dumps(obj).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
            except OSError:
                # The client (the proxy, after a timeout) went away first.
                self.close_connection = True

        def websocket(self):
            key = self.headers.get("sec-websocket-key", "")
            accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            self.send_response(101)
            self.send_header("upgrade", "websocket")
            self.send_header("connection", "Upgrade")
            self.send_header("sec-websocket-accept", accept)
            self.end_headers()
            self.wfile.flush()
            with lock:
                stats["count"] += 1
            while True:
                frame = read_frame(self.rfile)
                if frame is None:
                    break
                opcode, payload = frame
                if opcode == 8:
                    self.wfile.write(ws_frame(8, payload[:2]))
                    break
                if opcode in (1, 2):
                    self.wfile.write(ws_frame(1, a.name.encode() + b":" + payload))
                    self.wfile.flush()
            self.close_connection = True

        def answer(self):
            if (self.headers.get("upgrade", "").lower() == "websocket"
                    and "upgrade" in self.headers.get("connection", "").lower()):
                return self.websocket()
            if "chunked" in self.headers.get("transfer-encoding", "").lower():
                body = read_chunked(self.rfile)
            else:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
            if self.path == "/__stats" or self.path.startswith("/__stats?"):
                with lock:
                    snapshot = dict(stats)
                return self.send_json(200, snapshot)
            headers = {k.lower(): v for k, v in self.headers.items()}
            with lock:
                stats["count"] += 1
                number = stats["count"]
                stats["last"] = {"method": self.command, "path": self.path, "headers": headers}
                stats["active"] += 1
                stats["max_active"] = max(stats["max_active"], stats["active"])
            try:
                self.respond(number, headers, body)
            finally:
                with lock:
                    stats["active"] -= 1

        def respond(self, number, headers, body):
            if any(self.path.startswith(prefix) for prefix in a.reset_path):
                self.close_connection = True
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                except OSError:
                    pass
                return
            if a.delay_path is not None and a.delay_ms > 0 and self.path.startswith(a.delay_path):
                time.sleep(a.delay_ms / 1000.0)
            failing = (a.fail_every > 0 and number % a.fail_every == 0) \
                or any(self.path.startswith(prefix) for prefix in a.fail_path)
            self.send_json(503 if failing else 200,
                           {"name": a.name, "method": self.command, "path": self.path,
                            "headers": headers, "body": body.decode(errors="replace")})

        do_GET = do_POST = do_PUT = do_DELETE = answer

        def do_HEAD(self):
            # As many servers answer HEAD: the GET's headers, no Content-Length, no body
            # (RFC 9110 9.3.2 allows leaving it out). Keep-alive holds: the client knows
            # the answer to a HEAD ends with its head.
            with lock:
                stats["count"] += 1
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            # A reset or a client gone mid-answer is expected here, not worth a traceback.
            if not isinstance(sys.exc_info()[1], OSError):
                super().handle_error(request, client_address)

    server = Server(("0.0.0.0", a.port), Handler)
    print(json.dumps({"event": "listening", "port": a.port}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
